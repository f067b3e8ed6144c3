"""The gate, the recommendation and the exit code: what the measured rows mean for deployment."""

from __future__ import annotations

from pathlib import Path

from cpnet.runtime.errors import EXIT_CHECK_FAILED, EXIT_MISSING_DEPENDENCY, EXIT_USER_ERROR

from cpnet.runtime.log import get_logger

from .options import ReportOptions

log = get_logger("report")


def gate(rows: list[dict], options: ReportOptions) -> list[str]:
    """One line per offender (variant, class, figures); sets each measured row's ``status``."""
    lines = []
    eps = 1e-9
    for r in rows:
        if r["role"] != "variant":
            continue
        if r["status"] == "not run":
            lines.append(f"{r['name']}: not run ({r['reason']})")
            continue
        failed = []
        ci = r.get("miou_drift_ci")
        ci_text = f", 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        if -r["miou_drift"] > r["limit"] + eps:
            failed.append(f"{r['name']}: mIoU drift {r['miou_drift']:+.3f} points ({r['mIoU']:.3f} against "
                          f"{r['mIoU'] - r['miou_drift']:.3f}{ci_text}) is beyond the {r['precision']} limit of "
                          f"-{r['limit']:g}")
        if options.max_class_drift is not None:
            for c, d in r["class_drift"].items():
                if d is not None and -d > options.max_class_drift + eps:
                    cci = r["class_drift_ci"].get(c)
                    failed.append(f"{r['name']}: class {c}: IoU drift {d:+.3f} points ({r['per_class'][c]:.3f} "
                                  f"against {r['per_class'][c] - d:.3f}"
                                  f"{f', 95% CI [{cci[0]:+.3f}, {cci[1]:+.3f}]' if cci else ''}) is beyond "
                                  f"--max-class-drift {options.max_class_drift:g}")
        r["status"] = "fail" if failed else "pass"
        r["offences"] = failed
        if r.get("gated", True):
            lines += failed
        elif failed:
            log.info(f"{r['name']}: fails the drift limit on a runtime the report added (not gated, not "
                     f"recommended): {failed[0]}")
    return lines


def within_noise(row: dict, fastest: dict) -> bool:
    """Whether ``row`` is as fast as ``fastest`` within the measured spread of their repetitions: their
    interquartile ranges overlap (its 25th percentile is at most the fastest's 75th). A slow row that is also
    noisy does not tie with a fast, steady one (as "median within the larger IQR" would let it)."""
    lo = row.get("latency_p25_ms", row["latency_ms"])
    hi = fastest.get("latency_p75_ms", fastest["latency_ms"])
    return lo <= hi


def describe_row(row: dict) -> str:
    """'model.int8.onnx on OpenVINO, bf16': the file, the runtime and, where it matters, the precision it runs as."""
    runtime = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT",
               "torch": "PyTorch"}.get(row.get("backend"), row.get("backend") or "?")
    file = Path(row.get("path") or row["name"]).name
    hint = (row.get("backend_options") or {}).get("precision")
    return f"{file} on {runtime}" + (f", {hint}" if hint else "")


def recommend(rows: list[dict], machine: str) -> dict:
    """The fastest row within its limits on this machine; rows as fast within the measured spread of the
    repetitions (:func:`within_noise`) go to the smaller drift. Names the row key the demo runs."""
    ok = [r for r in rows if r["status"] in ("pass", "reference") and r.get("latency_ms") is not None]
    if not ok:
        return {"name": None, "key": None, "line": "No artifact could be measured; nothing to recommend."}
    fastest = min(ok, key=lambda r: r["latency_ms"])
    tied = [r for r in ok if within_noise(r, fastest)]
    best = min(tied, key=lambda r: (abs(r["miou_drift"]), r["latency_ms"]))
    ref = rows[0]
    speed = ref["latency_ms"] / best["latency_ms"] if best["latency_ms"] else float("nan")
    failing = [r["name"] for r in rows if r["status"] in ("fail", "not run")]
    if best["role"] == "reference":
        what = f"the reference itself, {best['name']}: no variant within its limits is faster on this machine"
    else:
        what = (f"{describe_row(best)} ({best['precision']}"
                f"{', ' + best['flavour'] + ' flavour' if best.get('flavour') else ''}): mIoU drift "
                f"{best['miou_drift']:+.3f} points (drop limit {best['limit']:g}), {speed:.2f}x the reference's speed")
    spread = fastest.get("latency_iqr_ms") or 0.0
    line = (f"Recommended on this machine: {what}; {best['latency_ms']:.2f} ms median per image over "
            f"{best.get('latency_images')} repetitions (interquartile range {best.get('latency_iqr_ms') or 0:.2f} ms"
            f"{'; ' + str(len(tied) - 1) + ' other row(s) as fast (interquartile ranges overlapping the fastest row, ' + format(spread, '.2f') + ' ms), the smaller drift chosen' if len(tied) > 1 else ''}"
            f") ({machine}).")
    if failing:
        line += f" Not eligible: {', '.join(failing)}."
    return {"name": best["name"], "key": best.get("key"), "path": best.get("path"), "backend": best.get("backend"),
            "backend_options": best.get("backend_options") or {}, "line": line, "speedup_vs_reference": speed,
            "ties": [r["name"] for r in tied if r is not best], "spread_ms": spread,
            "repetitions": best.get("latency_images")}


def exit_code(report: dict) -> int:
    if report["gate"]["offenders"] and any(r["status"] == "fail" and r.get("gated", True) for r in report["rows"]):
        return EXIT_CHECK_FAILED
    if report["gate"]["not_run"]:
        # a variant missing only because TensorRT/CUDA is absent is 3; one the user gave that is tampered or
        # unopenable is a user mistake, 2 (the front door's table)
        missing = all(r.get("missing_dependency") for r in report["rows"] if r["status"] == "not run")
        return EXIT_MISSING_DEPENDENCY if missing else EXIT_USER_ERROR
    return 0
