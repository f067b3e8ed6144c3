"""The end screen of ``cpnet pipeline``: where everything is, the headline figures, what to run next,
and each step's time. Built from the files the steps wrote (eval.json, the report's report.json, the
demo's summary, the stamps), so a run whose steps were all fresh shows the same screen. Printed on
stdout and kept as RUN_DIR/pipeline.txt."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from . import steps


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def _open_command(path: Path) -> str:
    opener = "open" if sys.platform == "darwin" else "start" if sys.platform.startswith("win") else "xdg-open"
    return f"{opener} {shlex.quote(str(path))}"


def lines(plan: steps.Plan, results: dict, machine: dict, seconds: float, code: int, stopped_at: str | None = None
          ) -> list[str]:
    out: list[str] = []
    if stopped_at:
        status = f"stopped at {stopped_at} (exit {code})"
    else:
        status = {0: "done", 1: "done, a gate failed (exit 1)"}.get(code, f"exit {code}")
    out.append(f"== cpnet pipeline: {plan.name}, {status}, {_clock(seconds)} ==")
    out.append(f"machine: {machine['machine']}")
    out.append(f"GEMM {machine['gemm_gflops']:.0f} GFLOP/s FP32 ({machine['threads']} threads), "
               f"load average {machine['load']:.2f} at the start")

    out.append("")
    out.append("where everything is")
    rows = [("data", plan.data), ("checkpoint", plan.checkpoint), ("evaluation", plan.eval_json),
            ("FP32 ONNX", plan.onnx), ("FP16 ONNX", plan.fp16), ("INT8 (TensorRT)", plan.int8),
            ("INT8 (CPU)", plan.int8_cpu)]
    for target in ("trt10", "trt11"):
        check = _read(plan.check_json(target))
        verdict = ""
        if check:
            ok = all(f.get("ok", not f.get("errors")) for f in check.get("files", []))
            verdict = " (pass)" if ok else " (FAILED)"
        rows.append((f"check {target}", f"{plan.check_json(target)}{verdict}" if check else None))
    engines = [plan.engine_of(p) for p in (plan.onnx, plan.fp16, plan.int8)]
    built = [e for e in engines if e.exists()]
    unavailable = (results.get("engines") or {}).get("why") or (None if built else steps.tensorrt_missing())
    rows.append(("engines", ", ".join(map(str, built)) if built else
                 f"skipped: {unavailable.split(';')[0]}" if unavailable else None))
    rows.append(("drift report", plan.report_dir / "report.html"))
    rows.append(("demo video", plan.demo_dir / "demo.mp4"))
    rows.append(("logs", f"{plan.logs}/STEP.log"))
    for label, value in rows:
        if value is None:
            value = "(not made)"
        elif isinstance(value, Path) and not value.exists():
            value = f"{value} (not made)"
        out.append(f"  {label:<16} {value}")

    evaluation = _read(plan.eval_json)
    report = _read(plan.report_dir / "report.json")
    demo = _read(plan.demo_dir / "demo.json")
    out.append("")
    if report:
        data = report.get("data", {})
        out.append(f"headline: {data.get('images', '?')} validation images, as deployed "
                   f"(latency: median per image on this machine)")
        out.append(f"  {'variant (file@backend[options])':<44} {'precision':<10} {'mIoU':>7} {'drift':>8} {'latency':>10}  status")
        for r in report.get("rows", []):
            drift = "ref" if r.get("role") == "reference" else _fmt(r.get("miou_drift"), "+.3f")
            lat = _fmt(r.get("latency_ms"), ".2f")
            out.append(f"  {r['name'][:44]:<44} {str(r.get('precision', '?')):<10} {_fmt(r.get('mIoU'), '.2f'):>7} "
                       f"{drift:>8} {lat + ' ms' if lat != '-' else lat:>10}  {r.get('status', '')}")
        rec = (report.get("recommendation") or {}).get("key") or (report.get("recommendation") or {}).get("name")
        if rec:
            out.append(f"  recommended on this machine: {rec}")
    else:
        out.append("headline: (no drift report)")
    if evaluation:
        pc = evaluation.get("per_class", {})

        def iou(c):
            return _fmt((pc.get(c) or {}).get("IoU"), ".2f")

        scales = "/".join(f"{s:g}" for s in evaluation.get("scales", []))
        out.append(f"  cpnet evaluate: mIoU {_fmt(evaluation.get('mIoU'), '.2f')}"
                   + (f", car {iou('car')}, boat {iou('boat')}" if "car" in pc and "boat" in pc else "")
                   + f" ({evaluation.get('mode', '?')}, scale {scales}, "
                     f"{'flip' if evaluation.get('flip') else 'no flip'})")
    if demo:
        out.append(f"  demo: {demo.get('mean_fps', 0):.1f} FPS, {demo.get('frames_shown', '?')} frames "
                   f"({Path(str(demo.get('backend', '')).split(' ')[0]).name or demo.get('backend')})")

    ckpt = steps._mtime(plan.checkpoint)
    older = [what for what, path in (("evaluation", plan.eval_json), ("drift report", plan.report_dir / "report.json"),
                                     ("demo", plan.demo_dir / "demo.json"))
             if ckpt is not None and (steps._mtime(path) or ckpt) < ckpt]
    if older:
        out.append(f"  note: the {', '.join(older)} figures are from an earlier checkpoint; cpnet pipeline updates them")
    out.append("")
    out.append("next")
    out.append(f"  open the report      {_open_command(plan.report_dir / 'report.html')}")
    model, flags = steps.demo_model(plan)
    out.append(f"  demo on a camera     cpnet demo {shlex.join([str(model), *flags])}")
    out.append(f"  rerun from a step    cpnet pipeline --from STEP   ({', '.join(steps.STEP_NAMES)})")

    out.append("")
    out.append("step times")
    parts = []
    for name in steps.STEP_NAMES:
        r = results.get(name)
        if r is None:
            continue
        if r["state"] == "unavailable":
            parts.append(f"{name} skipped")
        elif r["state"] == "fresh":
            parts.append(f"{name} fresh ({_fmt(r.get('seconds'), '.1f')} s before)")
        else:
            parts.append(f"{name} {r['seconds']:.1f} s" + ("" if r.get("rc") in (0, None) else f" (exit {r['rc']})"))
    width, line = 100, " "
    for part in parts:
        if len(line) + len(part) + 3 > width:
            out.append(line.rstrip(" |"))
            line = " "
        line += f" {part} |"
    out.append(line.rstrip(" |"))
    out.append(f"  total {_clock(seconds)}")
    return out


def print_screen(plan: steps.Plan, results: dict, machine: dict, seconds: float, code: int,
                 stopped_at: str | None = None) -> None:
    text = "\n".join(lines(plan, results, machine, seconds, code, stopped_at))
    print(text, flush=True)
    try:
        from cpnet.runtime import atomic_write_text

        atomic_write_text(plan.run / "pipeline.txt", text + "\n")
    except Exception:  # noqa: BLE001 - the screen is shown; keeping a copy is a courtesy
        pass
