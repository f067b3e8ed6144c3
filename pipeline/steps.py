"""The steps of ``cpnet pipeline``: what each runs, reads and writes, and when it is fresh.

A step is one or more ``cpnet VERB ...`` command lines with the files they read
(inputs) and the files they write (outputs). It is **fresh**, and skipped, when its
stamp (``RUN/stamps/STEP.json``, written when it ends well) records the same command
lines and cpnet version, every output exists, and no input is newer than the oldest
output. So regenerating the data retrains; re-exporting makes new FP16/INT8 files; a
changed option (``--calib-images``, a config override) reruns that step and, through the
files it rewrites, the ones after it.

A **gate** step may exit 1 with its outputs written (the FP16 drift limit, the TensorRT
pre-flight check, the drift report's gate): the pipeline goes on and exits 1 at the end;
its stamp keeps the 1, so a skipped gate step still fails the run. Any other failure stops.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Callable

#: Pipeline order; ``--from`` and ``--only`` take these names.
STEP_NAMES = ("data", "train", "evaluate", "export", "fp16", "int8", "int8-cpu", "check-trt10", "check-trt11",
              "engines", "report", "demo")

#: Demo clip: each validation image held this many frames, at most CLIP_MAX_FRAMES frames, at CLIP_FPS.
CLIP_FRAMES_PER_IMAGE = 3
CLIP_MAX_FRAMES = 300
CLIP_FPS = 10


@dataclasses.dataclass
class Plan:
    """Where everything goes, and the options the steps share."""

    config: str  # a named config or a YAML path
    name: str  # the config's name
    overrides: tuple[str, ...]
    run: Path
    data: Path
    synthetic: bool  # the data step generates the dataset (else it is the user's, under data)
    train_images: int
    val_images: int
    image_size: int
    calib_images: int | None = None
    threads: int | None = None
    progress: bool = True
    verbose: bool = False
    overwrite: bool = False  # the user's word: replace a run or dataset the pipeline did not make

    @property
    def export(self) -> Path:
        return self.run / "export"

    @property
    def onnx(self) -> Path:
        return self.export / "model.onnx"

    @property
    def fp16(self) -> Path:
        return self.export / "model.fp16.onnx"

    @property
    def int8(self) -> Path:
        return self.export / "model.int8.onnx"

    @property
    def int8_cpu(self) -> Path:
        return self.export / "model.int8-cpu.onnx"

    @property
    def checkpoint(self) -> Path:
        return self.run / "best.pt"

    @property
    def eval_json(self) -> Path:
        return self.run / "eval.json"

    @property
    def report_dir(self) -> Path:
        return self.run / "report"

    @property
    def demo_dir(self) -> Path:
        return self.run / "demo"

    @property
    def clip(self) -> Path:
        return self.demo_dir / "clip.mp4"

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def stamps(self) -> Path:
        return self.run / "stamps"

    def check_json(self, target: str) -> Path:
        return self.run / "check" / f"{target}.json"

    def engine_of(self, onnx: Path) -> Path:
        return onnx.with_suffix(".engine")

    @property
    def data_marker(self) -> Path:
        """What stands for the whole dataset: classes.yaml (written last by cpnet data), or a user's folder."""
        return self.data / "classes.yaml" if self.synthetic else self.data

    def data_flags(self, folder_flag: str) -> list[str]:
        """The synthetic folder through ``folder_flag`` (--data, --calib-data), or a config's data through
        --data-root (the config comes from the checkpoint's manifest)."""
        return [folder_flag, str(self.data)] if self.synthetic else ["--data-root", str(self.data)]

    def log_of(self, step: str) -> Path:
        return self.logs / f"{step}.log"

    def stamp_of(self, step: str) -> Path:
        return self.stamps / f"{step}.json"


@dataclasses.dataclass
class Step:
    name: str
    what: str  # one line, for the screen
    commands: list[tuple[str, list[str]]]  # (verb, argv) run in order through the front door
    inputs: list[Path]
    outputs: list[Path]
    gate: bool = False  # exit 1 with the outputs written: go on, exit 1 at the end
    unavailable: str | None = None  # why it cannot run on this machine ("skipped: ..." once, no stamp)
    before: Callable[[], None] | None = None  # work of the pipeline's own before the commands (the demo clip)
    fresh_check: Callable[[], str | None] | None = None  # an extra reason to be stale, or None
    already_made: Callable[[], bool] | None = None  # without a stamp: the outputs are already what it would make
    volatile: tuple[str, ...] = ()  # flags that say how to write (--resume, --overwrite), not what: not options

    def options(self) -> dict:
        from cpnet import __version__

        return {"commands": [[verb, *(a for a in argv if a not in self.volatile)] for verb, argv in self.commands],
                "cpnet": __version__}


# ----------------------------------------------------------------------------- freshness


def read_stamp(plan: Plan, name: str) -> dict | None:
    try:
        return json.loads(plan.stamp_of(name).read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def stale_reason(step: Step, plan: Plan) -> str | None:
    """None when ``step`` is fresh (see the module docstring), else why it must run."""
    stamp = read_stamp(plan, step.name)
    if stamp is None:
        return None if step.already_made is not None and step.already_made() else "not run here yet"
    if stamp.get("options") != step.options():
        return "its options changed"
    if stamp.get("rc") not in ((0, 1) if step.gate else (0,)):
        return "it did not finish last time"
    out_times = []
    for out in step.outputs:
        t = _mtime(out)
        if t is None:
            return f"{out} is missing"
        out_times.append(t)
    oldest = min(out_times, default=float("inf"))
    for inp in step.inputs:
        t = _mtime(inp)
        if t is None:
            return f"its input {inp} is missing"
        if t > oldest:
            return f"{inp} is newer than its outputs"
    recorded = stamp.get("sha256") or {}
    for path in [*step.inputs, *step.outputs]:
        digest = manifest_sha256(path)
        if digest is None:
            continue
        if path in step.inputs and recorded.get(str(path), digest) != digest:
            return f"{path} was replaced since this step ran"
        from cpnet.runtime.files import artifact_sha256

        if artifact_sha256(path) != digest:
            return f"{path} does not match its manifest's sha256 (changed or damaged after it was made)"
    if step.fresh_check is not None:
        return step.fresh_check()
    return None


def manifest_sha256(path: Path) -> str | None:
    """The sha256 the manifest beside ``path`` records for it (None: no manifest, or none recorded)."""
    try:
        digest = json.loads(Path(str(path) + ".json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) and path.is_file() else None


def write_stamp(step: Step, plan: Plan, rc: int | None, seconds: float) -> None:
    """The step's stamp; ``rc`` None while it runs (what a kill -9 leaves): the pipeline made these outputs,
    and an interrupted training is resumed."""
    from cpnet.runtime import atomic_write_json

    import time

    atomic_write_json(plan.stamp_of(step.name), {
        "step": step.name, "options": step.options(), "rc": rc, "seconds": round(seconds, 3),
        "finished" if rc is not None else "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [str(p) for p in step.inputs], "outputs": [str(p) for p in step.outputs],
        "sha256": {str(p): d for p in step.inputs if (d := manifest_sha256(p))}})


def made_by_pipeline(plan: Plan, name: str, output: Path) -> dict | None:
    """Step ``name``'s stamp when it says this pipeline run directory made ``output`` (finished or not)."""
    stamp = read_stamp(plan, name)
    return stamp if stamp is not None and str(output) in stamp.get("outputs", []) else None


def train_mode(plan: Plan) -> list[str]:
    """How the train step writes into the run directory: nothing there yet: no flag; an interrupted training
    of the pipeline's with the same options: --resume; a run the pipeline made otherwise, or any run with the
    user's --overwrite: --overwrite. A run it did not make, without --overwrite: refused (UserError)."""
    from cpnet.runtime.errors import UserError
    from cpnet.train import held_run

    held = held_run(plan.run)
    if not held:
        return []
    stamp = made_by_pipeline(plan, "train", plan.checkpoint)
    if stamp is not None:
        step = make_step("train", plan, mode=[])
        interrupted = stamp.get("rc") in (None, 130) and stamp.get("options") == step.options()
        return ["--resume"] if interrupted else ["--overwrite"]
    if plan.overwrite:
        return ["--overwrite"]
    raise UserError(f"{plan.run}: holds a run the pipeline did not make ({', '.join(held[:3])}); pass --overwrite "
                    f"to replace it, or choose another -o")


def data_mode(plan: Plan) -> list[str]:
    """--overwrite for cpnet data when this pipeline made the dataset there or the user said so; otherwise
    cpnet data refuses a folder holding anything."""
    return ["--overwrite"] if plan.overwrite or made_by_pipeline(plan, "data", plan.data_marker) else []


# ----------------------------------------------------------------------------- the steps


def _runtime(plan: Plan, verb_takes_progress: bool = True) -> list[str]:
    extra = []
    if plan.threads:
        extra += ["--threads", str(plan.threads)]
    if not plan.progress and verb_takes_progress:
        extra.append("--no-progress")
    if plan.verbose:
        extra.append("-v")
    return extra


def _calib(plan: Plan) -> list[str]:
    return ["--num-images", str(plan.calib_images)] if plan.calib_images else []


def _config_file(plan: Plan) -> list[Path]:
    from cpnet.config import CONFIG_DIR, named_configs

    if plan.config in named_configs():
        return [CONFIG_DIR / f"{plan.config}.yaml"]
    return [Path(plan.config)]


def data_header(plan: Plan) -> str:
    """The first line cpnet data writes in classes.yaml for these options."""
    from cpnet.data.synthetic import GENERATOR_VERSION

    return (f"# cpnet synthetic dataset v{GENERATOR_VERSION}: seed 0, size {plan.image_size}, "
            f"train {plan.train_images}, val {plan.val_images}")


def _data_matches(plan: Plan) -> str | None:
    try:
        first = plan.data_marker.read_text().splitlines()[0]
    except (OSError, IndexError):
        return f"{plan.data_marker} is unreadable"
    return None if first == data_header(plan) else f"{plan.data} holds another dataset ({first.lstrip('# ')})"


def tensorrt_missing() -> str | None:
    """Why engines cannot be built here (None when TensorRT and an NVIDIA GPU are both present)."""
    from cpnet.runtime.machine import gpus

    lacking = []
    if importlib.util.find_spec("tensorrt") is None:
        lacking.append("TensorRT is not installed")
    if not gpus():
        lacking.append("no NVIDIA GPU")
    if not lacking:
        return None
    return (f"{' and '.join(lacking)}; engines are built where both are (pip install -e '.[tensorrt-cu12]' on a machine "
            f"with an NVIDIA GPU, then cpnet pipeline --from engines)")


def demo_model(plan: Plan) -> tuple[Path, list[str]]:
    """The row the drift report recommends on this machine, by its key (artifact, backend, options): the file and
    the flags that choose its backend and options; else the cpu-flavour INT8 file, else FP32, on their own backend."""
    from engines.backends.row_key import RowKey

    try:
        report = json.loads((plan.report_dir / "report.json").read_text())
        key = report["recommendation"]["key"]
        row = next(r for r in report["rows"] if r.get("key") == key)
        path = Path(row["path"])
        if path.exists():
            return path, RowKey.parse(key).flags()
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        pass
    return (plan.int8_cpu if plan.int8_cpu.exists() else plan.onnx), []


def _as_file(path: Path) -> Path:
    """A run directory stands for its checkpoint (for modification times)."""
    if path.is_dir():
        from cpnet.checkpoint import resolve_checkpoint

        try:
            return resolve_checkpoint(path)
        except Exception:  # noqa: BLE001 - a missing checkpoint shows as a missing input
            return path / "best.pt"
    return path


def clip_side(image_size: int) -> int:
    return min(512, 4 * image_size)


def make_clip(plan: Plan) -> Path:
    """A video of the validation images (each held CLIP_FRAMES_PER_IMAGE frames, scaled up), for the demo of a
    user's dataset (a synthetic one gets ``cpnet data --clip``'s motion clip instead)."""
    import cv2

    from cpnet.runtime.errors import UserError
    from cpnet.runtime.files import utf8_path
    from cpnet.runtime.video import VideoFile

    folder = plan.data / "images" / "val"
    if not folder.is_dir():  # another layout: the first images found under the data folder
        folder = plan.data
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
                   and "mask" not in p.parts[-2].lower())[:CLIP_MAX_FRAMES // CLIP_FRAMES_PER_IMAGE]
    if not files:
        raise UserError(f"{folder}: no validation images to make the demo clip from")
    side = clip_side(plan.image_size)
    video = VideoFile(plan.clip, CLIP_FPS)  # checked readable before it is moved into place, as every video
    try:
        for f in files:
            image = cv2.imread(utf8_path(f, "image"), cv2.IMREAD_COLOR)
            if image is None:
                continue
            frame = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
            for _ in range(CLIP_FRAMES_PER_IMAGE):
                if video.frames >= CLIP_MAX_FRAMES:
                    break
                video.write(frame)
            if video.frames >= CLIP_MAX_FRAMES:
                break
    except BaseException:
        video.discard()
        raise
    if video.frames == 0:
        video.discard()
        raise UserError(f"{folder}: no readable validation image to make the demo clip from")
    return video.close()


def make_step(name: str, plan: Plan, mode: list[str] | None = None) -> Step:
    """The step called ``name`` for ``plan``; built when it is reached, so it sees what earlier steps wrote.
    ``mode``: the train step's --resume/--overwrite (default: :func:`train_mode`)."""
    run, data = str(plan.run), str(plan.data)
    rt = _runtime(plan)
    if name == "data":
        if not plan.synthetic:
            return Step(name, "the dataset", [], [], [plan.data],
                        unavailable=f"the config's dataset is not the synthetic one: using {plan.data} as it is")
        argv = ["-o", data, "--train", str(plan.train_images), "--val", str(plan.val_images),
                "--size", str(plan.image_size), "--seed", "0", *data_mode(plan)] + (["-v"] if plan.verbose else [])
        return Step(name, f"generate {plan.train_images} + {plan.val_images} synthetic images of {plan.image_size} px",
                    [("data", argv)], [], [plan.data_marker], fresh_check=lambda: _data_matches(plan),
                    already_made=lambda: _data_matches(plan) is None, volatile=("--overwrite",))
    if name == "train":
        mode = train_mode(plan) if mode is None else mode
        argv = [plan.config, *plan.overrides, "--data-root", data, "-o", run, *mode, *_runtime(plan)]
        return Step(name, f"train {plan.name}" + (" (resuming the interrupted training)" if "--resume" in mode else ""),
                    [("train", argv)], [plan.data_marker, *_config_file(plan)], [plan.checkpoint],
                    volatile=("--resume", "--overwrite"))
    if name == "evaluate":
        argv = [run, "--data-root", data, "--json", str(plan.eval_json), *rt]
        return Step(name, "evaluate the checkpoint on the validation split", [("evaluate", argv)],
                    [plan.checkpoint, plan.data_marker], [plan.eval_json])
    if name == "export":
        argv = [run, "--data-root", data, *rt]
        return Step(name, "export to ONNX, checked against PyTorch", [("export", argv)],
                    [plan.checkpoint, plan.data_marker], [plan.onnx])
    if name == "fp16":
        argv = [str(plan.onnx), *plan.data_flags("--calib-data"), *_calib(plan), *rt]
        return Step(name, "FP16, with the drift limit", [("fp16", argv)], [plan.onnx, plan.data_marker], [plan.fp16],
                    gate=True)
    if name in ("int8", "int8-cpu"):
        flavour = "cpu" if name == "int8-cpu" else "tensorrt"
        out = plan.int8_cpu if flavour == "cpu" else plan.int8
        argv = [str(plan.onnx), *plan.data_flags("--calib-data"), *_calib(plan), "--flavour", flavour, *rt]
        return Step(name, f"INT8, {flavour} flavour, calibrated on training images", [("int8", argv)],
                    [plan.onnx, plan.data_marker], [out])
    if name in ("check-trt10", "check-trt11"):
        target = name.split("-")[1]
        files = [plan.onnx, plan.fp16, plan.int8]
        argv = [*map(str, files), "--target", target, "--json", str(plan.check_json(target))]
        argv += ["-v"] if plan.verbose else []
        return Step(name, f"TensorRT pre-flight check ({target}) of the FP32, FP16 and INT8 files",
                    [("check", argv)], files, [plan.check_json(target)], gate=True)
    if name == "engines":
        sources = [plan.onnx, plan.fp16, plan.int8]
        commands = [("build", [str(s)] + (["--no-progress"] if not plan.progress else [])) for s in sources]
        return Step(name, "TensorRT engines (FP32, FP16, INT8)", commands, sources,
                    [plan.engine_of(s) for s in sources], unavailable=tensorrt_missing())
    if name == "report":
        variants = sorted(p for p in plan.export.glob("*") if p.suffix in (".onnx", ".engine")
                          and Path(str(p) + ".json").exists()) if plan.export.is_dir() else []
        argv = [run, *plan.data_flags("--data"), "-o", str(plan.report_dir), *_runtime(plan)]
        return Step(name, "drift report of every variant against the checkpoint, with its gate",
                    [("report", argv)], [plan.checkpoint, plan.data_marker, *variants],
                    [plan.report_dir / "report.json", plan.report_dir / "report.html"], gate=True)
    if name == "demo":
        model, flags = demo_model(plan)
        out, summary = plan.demo_dir / "demo.mp4", plan.demo_dir / "demo.json"
        # --overwrite: the video is the pipeline's own, in its demo folder, which the run's ownership check covers
        argv = [str(model), *flags, "-s", str(plan.clip), "--headless", "--no-drop", "-o", str(out), "--overwrite",
                "--json", str(summary)]
        argv += ["--threads", str(plan.threads)] if plan.threads else []
        argv += ["-v"] if plan.verbose else []
        how = f" on {flags[1]}" + (f" ({flags[3]})" if len(flags) > 2 else "") if flags else ""
        if plan.synthetic:  # a slow pan and zoom over one scene: motion without scene cuts, for the flicker figures
            # the clip lives in the pipeline's own demo folder, which the run's ownership check already covers
            clip = ["--clip", str(plan.clip), "--size", str(plan.image_size), "--clip-side",
                    str(clip_side(plan.image_size)), "--overwrite"]
            return Step(name, f"the live demo on a motion clip of a synthetic scene, with {model.name}{how}",
                        [("data", clip), ("demo", argv)], [_as_file(model), plan.data_marker],
                        [plan.clip, out, summary])
        return Step(name, f"the live demo on a clip of the validation images, with {model.name}{how}",
                    [("demo", argv)], [_as_file(model), plan.data_marker], [plan.clip, out, summary],
                    before=lambda: make_clip(plan))
    raise KeyError(name)
