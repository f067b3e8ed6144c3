"""Benchmark: mIoU drift of every deployed variant of the quickstart model on the synthetic validation split.

    python benchmarks/quantize_drift.py                                     # runs/quickstart, data/synthetic
    python benchmarks/quantize_drift.py --run-dir runs/q --data-root data/synthetic --num-images 200

Needs a trained run (scripts/quickstart.sh makes runs/quickstart) and the
synthetic dataset. Steps, each skipped when its output already exists and is
newer than its parent (--force redoes them):

1. export: ``cpnet.export.export_checkpoint(run_dir)`` -> RUN/export/model.onnx;
2. FP16: ``quantize.fp16.convert_fp16`` -> model.fp16.onnx (``cpnet fp16``);
3. INT8, both flavours (``quantize.int8.quantize_int8``, ``cpnet int8``, entropy ranges
   from --num-images training images): model.int8.onnx (tensorrt), model.int8-cpu.onnx
   (cpu). When a flavour's mIoU drift against ONNX FP32 exceeds 0.5 points, it is
   made again with ``--keep-float auto`` (sensitivity-ranked nodes left in
   float until the argmax disagreement on the calibration images is below the
   ``--max-disagreement`` threshold), the threshold halved each time the mIoU
   target still fails, at most --fallback-rounds times.

A file that misses its FP16/INT8 drift limit (the label-free disagreement the
quantizer measures) is kept here, as written: the mIoU measured below is what
this benchmark judges.

Then every variant is evaluated with ``cpnet.evaluate.evaluate_model`` (the
config's eval settings; the ONNX variants through ``cpnet.runtime.ort.OnnxModel``
on the CPU) and a table of mIoU, drift vs PyTorch and drift vs ONNX FP32 is
printed with the targets: ONNX FP32 == PyTorch within 0.01 point, FP16 drift
<= 0.1, INT8 drift <= 0.5 for both flavours (drifts of the reduced-precision
files are taken against ONNX FP32, the file they are made from). Exit status 1
when a target fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"ort_fp32": 0.01, "ort_fp16": 0.1, "ort_int8_tensorrt": 0.5, "ort_int8_cpu": 0.5}
LABELS = {"torch_fp32": "PyTorch FP32", "ort_fp32": "ONNX FP32", "ort_fp16": "ONNX FP16",
          "ort_int8_tensorrt": "INT8 (tensorrt)", "ort_int8_cpu": "INT8 (cpu)"}


def _fresh(out: Path, parent: Path) -> bool:
    return (out.is_file() and out.stat().st_mtime >= parent.stat().st_mtime
            and out.with_name(out.name + ".json").is_file())


def closest(make, *args, **kwargs):
    """(path, manifest) of a quantizer call; a missed drift limit is reported and the closest result kept."""
    from quantize.drift import DriftLimitExceeded

    try:
        return make(*args, **kwargs)
    except DriftLimitExceeded as e:
        print(f"note: {e}")
        return e.path, e.manifest


def evaluate(infer, model, dataset, cfg) -> float:
    from cpnet.evaluate import evaluate_model

    return evaluate_model(model, dataset, cfg, infer=infer, progress=False)["mIoU"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart"), help="trained run (default runs/quickstart)")
    p.add_argument("--data-root", default=str(ROOT / "data" / "synthetic"),
                   help="synthetic dataset (default data/synthetic)")
    p.add_argument("--num-images", type=int, default=200, help="INT8 calibration images (default 200)")
    p.add_argument("--method", default="entropy", choices=["entropy", "percentile", "minmax"])
    p.add_argument("--fallback-rounds", type=int, default=3, help="--keep-float auto attempts per flavour (default 3)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime / PyTorch threads (default 2)")
    p.add_argument("--force", action="store_true", help="redo export and quantization even if the files exist")
    args = p.parse_args(argv)

    import torch

    from cpnet.checkpoint import config_of, load_checkpoint
    from cpnet.data import build_dataset
    from cpnet.export import export_checkpoint
    from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
    from cpnet.runtime import UserError
    from cpnet.models import CPNet
    from cpnet.runtime.ort import OnnxModel
    from quantize.fp16 import DEFAULT_NUM_IMAGES as FP16_IMAGES
    from quantize.fp16 import convert_fp16
    from quantize.int8 import quantize_int8

    torch.set_num_threads(args.threads)
    runtime = RuntimeOptions(threads=args.threads, progress=False)
    t0 = time.perf_counter()
    run, data_root = Path(args.run_dir), args.data_root
    if not run.exists():
        print(f"error: {run}: no such run directory; train one first (bash scripts/quickstart.sh makes "
              f"runs/quickstart and data/synthetic) or pass --run-dir", file=sys.stderr)
        return 2
    try:
        ckpt = load_checkpoint(run)
        cfg = config_of(ckpt)
        cfg.data.root = data_root
        dataset = build_dataset(cfg.data, cfg.data.val_split, cfg.crop_size, train=False,
                                num_classes=cfg.model.num_classes)
        ckpt_path = Path(ckpt["path"])
        export_dir = run / "export"
        fp32 = export_dir / "model.onnx"
        if args.force or not _fresh(fp32, ckpt_path):
            print(f"exporting {ckpt_path} -> {fp32}")
            export_checkpoint(run, fp32, data_root=data_root, runtime=runtime)
        fp16 = export_dir / "model.fp16.onnx"
        if args.force or not _fresh(fp16, fp32):
            print(f"FP16 -> {fp16}")
            closest(convert_fp16, fp32, fp16, calibration=CalibrationOptions(data=data_root, num_images=FP16_IMAGES),
                    runtime=runtime)

        model = CPNet(cfg.model)
        model.load_state_dict(ckpt["model"])
        model.eval()
        miou = {"torch_fp32": evaluate(None, model, dataset, cfg)}
        for key, path in (("ort_fp32", fp32), ("ort_fp16", fp16)):
            with OnnxModel(path, threads=args.threads) as m:
                miou[key] = evaluate(m, None, dataset, cfg)
        notes = {}
        for flavour in ("tensorrt", "cpu"):
            key = f"ort_int8_{flavour}"
            out = export_dir / ("model.int8.onnx" if flavour == "tensorrt" else "model.int8-cpu.onnx")
            common = dict(calibration=CalibrationOptions(data=data_root, num_images=args.num_images), runtime=runtime,
                          method=args.method, flavour=flavour)
            if args.force or not _fresh(out, fp32):
                print(f"INT8 {flavour} -> {out}")
                closest(quantize_int8, fp32, out, **common)
            with OnnxModel(out, threads=args.threads) as m:
                miou[key] = evaluate(m, None, dataset, cfg)
            threshold = 0.5
            rounds = 0
            while abs(miou["ort_fp32"] - miou[key]) > TARGETS[key] and rounds < args.fallback_rounds:
                rounds += 1
                print(f"INT8 {flavour}: drift {miou['ort_fp32'] - miou[key]:.3f} > {TARGETS[key]}: "
                      f"--keep-float auto with disagreement target {threshold}%")
                _, man = closest(quantize_int8, fp32, out, auto_keep_float=True, max_disagreement=threshold, **common)
                with OnnxModel(out, threads=args.threads) as m:
                    miou[key] = evaluate(m, None, dataset, cfg)
                notes[key] = (f"keep-float auto (target {threshold}%): "
                              f"{len(man['calibration']['excluded_nodes'])} node(s) in float")
                threshold /= 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"\nmIoU on {len(dataset)} {cfg.data.val_split} images of {data_root} ({cfg.eval.mode}, "
          f"{ckpt_path.name}; ONNX Runtime CPU, {args.threads} threads)")
    print(f"{'variant':<18} {'mIoU':>8} {'vs PyTorch':>11} {'vs ONNX FP32':>13}  target")
    ok_all = True
    for key, label in LABELS.items():
        v = miou[key]
        d_pt = v - miou["torch_fp32"]
        d_onnx = v - miou["ort_fp32"]
        line = f"{label:<18} {v:>8.3f} {d_pt:>+11.3f} {d_onnx:>+13.3f}"
        if key in TARGETS:
            drift = abs(d_pt) if key == "ort_fp32" else abs(d_onnx)
            ok = drift <= TARGETS[key]
            ok_all &= ok
            ref = "PyTorch" if key == "ort_fp32" else "ONNX FP32"
            line += f"  |drift vs {ref}| <= {TARGETS[key]}: {'PASS' if ok else 'FAIL'} ({drift:.3f})"
        if key in notes:
            line += f"  [{notes[key]}]"
        print(line)
    print(f"[{time.perf_counter() - t0:.0f} s]")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
