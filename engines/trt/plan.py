"""What a build sets, decided from the TensorRT version, the options and the file's precision (pure Python):
network typing, builder flags, the DLA path, the workspace, and the optimization profile of a dynamic input.
:mod:`engines.trt.network` and :mod:`engines.trt.config` apply it.

- Typing. TensorRT 11 networks are always strongly typed (its ``STRONGLY_TYPED`` creation flag is "retained for
  API compatibility but is ignored", Python API "Builder" page, 11.0.0). TensorRT 10 builds strongly typed too
  (``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)``), except ``--fp16-flag`` and DLA builds, which
  are weakly typed with ``BuilderFlag.FP16`` (and ``INT8`` for an explicitly quantized file, as
  ``trtexec --int8 --fp16`` builds it: "Working with DLA"); :mod:`engines.trt.dla` says which DLA path a
  version takes.
- Portability: ``BuilderFlag.VERSION_COMPATIBLE`` (the plan embeds the lean runtime) and
  ``hardware_compatibility_level``, as Polygraphy's CreateConfig sets them; a version-compatible build from
  ONNX parses with ``OnnxParserFlag.NATIVE_INSTANCENORM`` (Polygraphy CreateConfig).
- The profile of a dynamic input: batch 1 to ``--batch``, kernels tuned for ``--opt-batch`` (the batch most
  calls use, 1 unless told; trtexec's --optShapes, Polygraphy's Profile), H x W from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpnet.runtime import UserError

from . import dla, hardware
from .options import BuildOptions
from .versions import major_of


@dataclass(frozen=True)
class BuildPlan:
    """How one build is made: ``strongly_typed`` (the engine's precision comes from the file), whether the
    network asks for it with TensorRT 10's creation flag, the ``BuilderFlag`` names that set precision, the DLA
    path (None: a GPU engine), the workspace in MiB, and whether the parser takes NATIVE_INSTANCENORM."""

    strongly_typed: bool
    strongly_typed_flag: bool
    precision_flags: tuple[str, ...]
    dla: dla.DlaPath | None
    workspace_mib: int
    native_instancenorm: bool

    @property
    def gpu_fallback_possible(self) -> bool:
        """Whether this DLA path lets layers DLA cannot run fall back to the GPU (Windows on ARM has none)."""
        return self.dla is not None and self.dla.gpu_fallback


def build_plan(trt_version: str, opts: BuildOptions, precision: str | None = None) -> BuildPlan:
    """The plan for building ``opts`` on TensorRT ``trt_version``; ``precision`` is the file's ("int8": its Q/DQ
    nodes give the scales, so a weakly typed DLA build sets INT8 as well as FP16)."""
    dla_path = dla.dla_path(trt_version) if opts.dla_core is not None else None
    weak_dla = dla_path is not None and not dla_path.strongly_typed
    if major_of(trt_version) >= 11:
        strongly_typed, flag = True, False  # 11.0 Builder docs: STRONGLY_TYPED deprecated and ignored
    elif opts.fp16_flag or weak_dla:
        strongly_typed, flag = False, False  # weakly typed: FP16 (and INT8) flags let TensorRT pick kernels
    else:
        strongly_typed, flag = True, True
    flags = (("FP16",) if opts.fp16_flag or weak_dla else ()) + (("INT8",) if weak_dla and precision == "int8" else ())
    return BuildPlan(strongly_typed=strongly_typed, strongly_typed_flag=flag, precision_flags=flags, dla=dla_path,
                     workspace_mib=int(opts.workspace_mib or hardware.default_workspace_mib()),
                     native_instancenorm=bool(opts.version_compatible))


def describe(plan: BuildPlan, opts: BuildOptions) -> str:
    """The build's log line: 'workspace 4096 MiB, strongly typed, version compatible'."""
    extras = [f"DLA core {opts.dla_core} ({plan.dla.note})" if plan.dla is not None else "",
              "FP16 flag" if opts.fp16_flag else "strongly typed" if plan.strongly_typed else "",
              "version compatible" if opts.version_compatible else "",
              f"hardware compatible {opts.hardware_compatibility}" if opts.hardware_compatibility != "none" else ""]
    return f"workspace {plan.workspace_mib} MiB, {', '.join(e for e in extras if e)}"


def profile_shapes(name: str, shape, opts: BuildOptions,
                   input_size: tuple[int, int] | None) -> tuple[list[int], list[int], list[int]] | None:
    """(min, opt, max) of an input with dynamic dims, None for a static one. The batch dim spans 1..``opts.batch``
    with opt ``opts.opt_batch`` (default 1), H and W are the manifest's input size; any other dynamic dim is a
    UserError. DLA needs min = opt = max: its files are static (engines.check refuses dynamic dims for DLA), so
    no profile is made for them."""
    shape = [int(d) for d in shape]
    if not any(d < 0 for d in shape):
        return None
    lo, hi = list(shape), list(shape)
    for j, d in enumerate(shape):
        if d >= 0:
            continue
        if j == 0:
            lo[j], hi[j] = 1, int(opts.batch)
        elif input_size and j in (len(shape) - 2, len(shape) - 1):
            lo[j] = hi[j] = int(input_size[j - (len(shape) - 2)])
        else:
            raise UserError(f"input '{name}' dim {j} is dynamic and not the batch or H/W; re-export "
                            f"the ONNX file with static shapes")
    opt = list(lo)
    if shape[0] < 0:
        opt[0] = int(opts.opt_batch or 1)
    return lo, opt, hi
