"""What the pre-flight check is asked (:class:`CheckOptions`) and what it answers: one :class:`Problem` per
finding, one :class:`CheckResult` per file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from cpnet.runtime import UserError


class CheckError(UserError):
    """The file could not be read as ONNX (shown as one line)."""


@dataclass(frozen=True)
class CheckOptions:
    """What to check against: ``target`` (trt10 | trt10.3 | trt10.15 | trt11 | dla) or an exact
    ``trt_version`` ("10.7", overrides the target's table); ``strict_dla``: a node DLA cannot run is an
    error; ``assume_fp16``: the build sets TensorRT 10's FP16 flag (an FP32 file is then fine for DLA)."""

    target: str = "trt10"
    strict_dla: bool = False
    assume_fp16: bool = False
    trt_version: str | None = None


@dataclass
class Problem:
    level: str  # "error" | "warning"
    message: str
    node: str | None = None
    op: str | None = None

    def format(self, path: str | None = None) -> str:
        where = f"node '{self.node}' ({self.op}): " if self.node is not None else ""
        prefix = f"{path}: " if path else ""
        return f"{prefix}{self.level}: {where}{self.message}"

    def to_json(self) -> dict:
        return {"level": self.level, "node": self.node, "op": self.op, "message": self.message}


def node_problem(label: str, node) -> Callable[[str, str], Problem]:
    """``report(level, message)``: a :class:`Problem` naming this node (the rules report through it)."""
    return lambda level, message: Problem(level, message, label, node.op_type)


@dataclass
class CheckResult:
    path: str
    target: str
    opset: int | None
    num_nodes: int
    problems: list[Problem] = field(default_factory=list)
    table: str = ""
    unreadable: str | None = None  # why the file could not be read as ONNX

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors and self.unreadable is None

    def summary(self) -> str:
        if self.unreadable is not None:
            return f"FAILED: {self.unreadable}"
        table = f", {self.table} table" if self.table else ""
        tail = f"target {self.target}{table}, opset {self.opset}, {self.num_nodes} nodes"
        if self.ok:
            warned = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"OK: {self.path} ({tail}{warned})"
        return f"FAILED: {self.path}: {len(self.errors)} error(s), {len(self.warnings)} warning(s) ({tail})"

    def lines(self) -> list[str]:
        return [p.format(self.path) for p in self.problems] + [self.summary()]

    def to_json(self) -> dict:
        return {"path": self.path, "target": self.target, "table": self.table, "ok": self.ok, "opset": self.opset,
                "nodes": self.num_nodes, "unreadable": self.unreadable,
                "problems": [p.to_json() for p in self.problems]}
