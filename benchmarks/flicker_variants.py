"""Flicker of every exported variant on the motion clip, with and without ``--smooth``: does INT8 flicker more?

    python benchmarks/flicker_variants.py runs/quickstart                    # every ONNX file in export/
    python benchmarks/flicker_variants.py runs/quickstart --smooth 0.5 --clip runs/quickstart/demo/clip.mp4

The clip is ``cpnet data --clip`` (a slow pan and zoom over one synthetic scene, 90 frames), made with
the run's image size unless ``--clip`` names one. For each variant, one ``cpnet demo VARIANT --source CLIP
--headless --no-drop --smooth A --json`` (every frame, in order) gives both change rates (the raw argmax
and the smoothed one, demo/flicker.py) and the ms the smoothing adds. Mean IoU against the clip's own
labels is not measured here: the clip has none (the drift report gives each variant's mIoU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def demo_figures(model: Path, clip: Path, smooth: float, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "summary.json"
        argv = [sys.executable, "-m", "cpnet", "demo", str(model), "--source", str(clip), "--headless", "--no-drop",
                "--smooth", str(smooth), "--json", str(js), "-q"]
        argv += ["--threads", str(threads)] if threads else []
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.loads(js.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory (its export/ holds the variants), or a folder of ONNX files")
    p.add_argument("--clip", help="the clip (default: made with cpnet data --clip in the run's demo/ folder)")
    p.add_argument("--smooth", type=float, default=0.5, help="the EMA weight of the new frame (default 0.5)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    from cpnet.runtime.machine import machine_info, machine_line

    run = Path(args.run)
    folder = run / "export" if (run / "export").is_dir() else run
    variants = sorted(f for f in folder.glob("*.onnx") if Path(f"{f}.json").exists())
    if not variants:
        raise SystemExit(f"{folder}: no ONNX files with manifests (run cpnet pipeline first)")
    clip = Path(args.clip) if args.clip else run / "demo" / "flicker_clip.mp4"
    if not clip.exists():
        manifest = json.loads(Path(f"{variants[0]}.json").read_text())
        size = max(manifest["input_size"])
        subprocess.run([sys.executable, "-m", "cpnet", "data", "--clip", str(clip), "--size", str(size),
                        "--clip-side", str(min(512, 4 * size))], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"machine: {machine_line(machine_info(gemm=True))}")
    print(f"clip: {clip}; cpnet demo VARIANT --source {clip} --headless --no-drop --smooth {args.smooth:g} --json ...")
    rows = []
    for v in variants:
        s = demo_figures(v, clip, args.smooth, args.threads)
        f = s["flicker"]
        rows.append({"variant": v.name, "precision": json.loads(Path(f"{v}.json").read_text()).get("precision"),
                     "frames": s["frames_shown"], "raw": f["raw"], "smoothed": f["smoothed"],
                     "smooth_ms": f["smooth_ms_per_frame"], "infer_ms": s["ms_per_stage"]["infer"]})
    print("| variant | frames | changed per frame | where the input barely changed | with --smooth "
          f"{args.smooth:g}: changed | barely changed | smoothing ms per frame | infer ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['variant']}` | {r['frames']} | {r['raw']['change_pct']:.2f}% | {r['raw']['still_change_pct']:.2f}% "
              f"| {r['smoothed']['change_pct']:.2f}% | {r['smoothed']['still_change_pct']:.2f}% | {r['smooth_ms']:.2f} "
              f"| {r['infer_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clip": str(clip), "smooth": args.smooth, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
