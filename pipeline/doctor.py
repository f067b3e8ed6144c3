"""``cpnet doctor [ARTIFACT ...]``: what this machine can run, and why, on one screen (and ``--json FILE``).

It sits at the top (beside ``cpnet pipeline``) because it asks every stage: the OpenCV build as the demo reads it
(:func:`demo.sources.opencv_build`), the GPU and TensorRT as the engines read them (:func:`engines.trt.hardware.gpu_info`,
:func:`engines.trt.manifest.check_engine_manifest`, the engine cache), the CPU as every figure's machine line does
(:mod:`cpnet.runtime.machine`), and a Jetson's files (:mod:`cpnet.runtime.jetson`). Nothing is built or run: an
ONNX file's TensorRT engine is looked up in the cache (:func:`engines.engine_cache.lookup`), not made.

Every probe of a file takes ``root`` (``/`` unless a test lays out another tree); every probe of a library
imports it where installed and says "absent" where not, so the screen is complete on a bare machine too.
The JSON's fields are documented in docs/doctor.md. Exit 0 when every artifact given can run here, 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cpnet.runtime import CpnetError, UserError, read_manifest
from cpnet.runtime import jetson as jetson_probes
from cpnet.runtime.files import artifact_sha256, atomic_write_json, check_output

SCHEMA = 1


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cuda_text(v: int | None) -> str | None:
    """CUDA's integer versions (12020) as text ('12.2')."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else None


def _major(text: str | None) -> int | None:
    m = re.match(r"(\d+)", str(text or ""))
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- probes


def system(root: Path) -> dict:
    from cpnet.runtime.machine import machine_info

    info = machine_info()
    mem = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", (root / "proc/meminfo").read_text())
        mem = int(m.group(1)) // 1024 if m else None
    except OSError:
        pass
    return {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "cpu": info["cpu"], "arch": info["arch"], "cores": info["cores"], "usable_cores": info["usable_cores"],
            "simd": info["simd"], "memory_mib": mem,
            "display": bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
            "cameras": jetson_probes.cameras(root)}


def _driver_version(root: Path) -> str | None:
    """The kernel driver's version: /proc/driver/nvidia/version (desktop drivers), else nvidia-smi."""
    try:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", (root / "proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    exe = shutil.which("nvidia-smi") if str(root) == "/" else None
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def _cudart():
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        return cudart
    except Exception:
        return None


def nvidia(root: Path) -> dict:
    """Driver, CUDA (driver and runtime), cuDNN, TensorRT, PyCUDA, cuda-python, and whether they fit together."""
    from engines.trt.imports import import_tensorrt

    l4t = jetson_probes.l4t_release(root)  # a Jetson's GPU driver is L4T's own, with no version of its own
    out: dict = {"driver": _driver_version(root) or (f"L4T {l4t}" if l4t else None), "driver_cuda": None, "cuda_runtime": None, "cudnn": None,
                 "tensorrt": None, "tensorrt_cuda": None, "tensorrt_absent": None, "pycuda": None,
                 "cuda_python": _dist_version("cuda-python", "cuda-bindings"), "fit": None}
    try:
        import pycuda
        import pycuda.driver as cuda

        out["pycuda"] = getattr(pycuda, "VERSION_TEXT", None) or _dist_version("pycuda") or "installed"
        cuda.init()
        out["driver_cuda"] = _cuda_text(int(cuda.get_driver_version()))
    except Exception:
        pass
    cudart = _cudart()
    if cudart is not None:
        for key, call in (("driver_cuda", "cudaDriverGetVersion"), ("cuda_runtime", "cudaRuntimeGetVersion")):
            try:
                err, v = getattr(cudart, call)()
                if int(err) == 0 and not out[key]:
                    out[key] = _cuda_text(int(v))
            except Exception:
                pass
    if not out["cuda_runtime"]:
        try:
            out["cuda_runtime"] = json.loads((root / "usr/local/cuda/version.json").read_text())["cuda"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    debs = jetson_probes.dpkg_versions(root)
    cudnn_deb = next((v for k, v in debs.items() if re.fullmatch(r"libcudnn\d+(-cuda-\d+)?", k)), None)
    out["cudnn"] = cudnn_deb or _dist_version("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
    try:
        trt = import_tensorrt()
        out["tensorrt"] = trt.__version__
    except CpnetError as e:
        out["tensorrt_absent"] = str(e)
    # the CUDA major TensorRT was built for: its wheel's name (tensorrt-cu12...) or its deb's version (+cuda12.6)
    for major in (13, 12, 11):
        if _dist_version(f"tensorrt-cu{major}", f"tensorrt_cu{major}", f"tensorrt-cu{major}-libs",
                         f"tensorrt_cu{major}_libs"):
            out["tensorrt_cuda"] = str(major)
            break
    else:
        nvinfer = next((v for k, v in debs.items() if re.fullmatch(r"libnvinfer\d+", k)), None)
        m = re.search(r"cuda(\d+(?:\.\d+)?)", nvinfer or "")
        out["tensorrt_cuda"] = m.group(1) if m else None
    need, have = _major(out["tensorrt_cuda"]), _major(out["driver_cuda"])
    if out["tensorrt"] and need and have:
        ok = have >= need
        out["fit"] = {"ok": ok, "why": (f"TensorRT is built for CUDA {need} and the driver runs CUDA up to "
                                        f"{out['driver_cuda']}" + ("" if ok else ": update the driver (or JetPack), or "
                                                                   f"install the tensorrt-cu{have} wheel"))}
    return out


def gpu(jetson: bool) -> dict | None:
    """Name, compute capability, memory, integrated or discrete, DLA cores (from TensorRT, where it imports)."""
    from engines.trt.hardware import gpu_info
    from engines.trt.imports import import_tensorrt
    from engines.trt.logger import make_logger

    info = gpu_info()
    if info is None:
        return None
    info = {**info, "memory_mib": None, "integrated": jetson or None, "dla_cores": None}
    try:
        if info["source"] == "torch.cuda":  # no PyCUDA here: PyTorch's view of the same device
            import torch

            props = torch.cuda.get_device_properties(0)
            info["memory_mib"] = int(props.total_memory) // 2**20
            info["integrated"] = bool(props.is_integrated)
        else:
            import pycuda.driver as cuda

            d = cuda.Device(0)
            info["memory_mib"] = int(d.total_memory()) // 2**20
            info["integrated"] = bool(d.get_attribute(cuda.device_attribute.INTEGRATED))
    except Exception:
        pass
    try:
        trt = import_tensorrt()
        info["dla_cores"] = int(trt.Runtime(make_logger(trt)).num_DLA_cores)
    except Exception:
        pass
    return info


def onnxruntime() -> dict | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return {"version": ort.__version__, "providers": list(ort.get_available_providers())}


def openvino() -> dict | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    try:
        devices = list(ov.Core().available_devices)
    except Exception as e:  # a broken plugin must not break the screen
        devices = [f"(unavailable: {type(e).__name__})"]
    return {"version": str(getattr(ov, "__version__", None) or ov.get_version()), "devices": devices}


def opencv() -> dict | None:
    """OpenCV's build as the demo reads it, and what it means for ``cpnet demo``."""
    try:
        from demo.sources import opencv_build
    except ImportError:
        return None
    b = opencv_build()
    display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return {"version": b.version, "gui": b.gui, "gstreamer": b.gstreamer, "ffmpeg": b.ffmpeg, "v4l2": b.v4l2,
            "packages": list(b.packages),
            "demo": {"window": b.has_window and display, "cameras": b.v4l2, "video_files": b.ffmpeg,
                     "csi": b.gstreamer, "gstreamer_pipelines": b.gstreamer}}


def torch_info() -> dict | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": bool(torch.cuda.is_available())}


# --------------------------------------------------------------------------- artifacts


def _fail(row: dict, why: str, rebuild: str | None = None) -> dict:
    row.update(runs=False, why=why, rebuild=rebuild)
    return row


def check_artifact(path: "str | Path", here: dict) -> dict:
    """Whether ``path`` runs here, on which backend, and the command that remakes it when it cannot."""
    from engines.backends import backend_for

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    backend = backend_for(p)
    row = {"path": str(p), "backend": backend, "runs": True, "why": "", "rebuild": None, "tensorrt": None}
    if backend == "torch":
        if here["torch"] is None:
            return _fail(row, "PyTorch is not installed: pip install -e '.[train]', or run the exported ONNX file")
        return row
    manifest = read_manifest(p, required=False)
    if backend == "onnxruntime":
        if manifest is not None and manifest.get("sha256") and artifact_sha256(p) != manifest["sha256"]:
            return _fail(row, "the file does not match its manifest's sha256 (changed after it was made)",
                         "re-create it with the cpnet command that made it")
        if here["onnxruntime"] is None:
            return _fail(row, "ONNX Runtime is not installed: pip install -e .")
        row["tensorrt"] = _onnx_on_tensorrt(p, here)
        return row
    return _engine(p, manifest, row, here)


def _onnx_on_tensorrt(p: Path, here: dict) -> dict:
    """What ``--backend tensorrt`` would do with an ONNX file: reuse the cached engine, or build one first."""
    from engines import engine_cache

    if not here["nvidia"]["tensorrt"]:
        return {"runs": False, "why": "TensorRT is not installed", "engine": None}
    try:
        engine, why = engine_cache.lookup(p)
    except CpnetError as e:
        return {"runs": False, "why": str(e), "engine": None}
    return {"runs": True, "engine": str(engine),
            "why": "its cached engine is fresh" if why is None else f"builds {engine.name} on first use ({why})"}


def _engine(p: Path, manifest: dict | None, row: dict, here: dict) -> dict:
    from engines.trt.manifest import check_engine_manifest, rebuild_hint

    rebuild = rebuild_hint(manifest, str(p))
    if manifest is None:
        return _fail(row, "no manifest beside the engine: its origin and sha256 cannot be checked "
                          "(--trust-engine only for engines you built)", rebuild)
    if manifest.get("sha256") and artifact_sha256(p) != manifest["sha256"]:
        return _fail(row, "the engine does not match its manifest's sha256 (changed, truncated or replaced)", rebuild)
    trt_version = here["nvidia"]["tensorrt"]
    if not trt_version:
        return _fail(row, f"TensorRT is not installed here ({here['nvidia']['tensorrt_absent']})", rebuild)
    try:
        warnings = check_engine_manifest(manifest, trt_version, here["gpu"], str(p),
                                                  jetson=here["jetson"] is not None)
    except CpnetError as e:
        # the reason without the path and the rebuild hint, which the row's own fields hold
        return _fail(row, re.sub(r"[;:] rebuild it (here )?with .*$", "", str(e).removeprefix(f"{p}: ")), rebuild)
    if here["gpu"] is None:
        return _fail(row, "no CUDA GPU visible to pycuda, cuda-python or torch.cuda", rebuild)
    if (manifest.get("tensorrt") or {}).get("version_compatible"):
        warnings.append("version compatible: it carries host code, so open it with --allow-host-code")
    row["why"] = "; ".join(w.removeprefix(f"{p}: ") for w in warnings)
    return row


# --------------------------------------------------------------------------- the report


def report(artifacts=(), root: "str | Path" = "/") -> dict:
    root = Path(root)
    jet = jetson_probes.jetson_info(root)
    here = {"schema": SCHEMA, "system": system(root), "jetson": jet, "nvidia": nvidia(root)}
    here.update(gpu=gpu(jet is not None), onnxruntime=onnxruntime(), openvino=openvino(), opencv=opencv(),
                torch=torch_info())
    here["artifacts"] = [check_artifact(a, here) for a in artifacts]
    here["ok"] = all(a["runs"] for a in here["artifacts"])
    return here


def _v(value, absent: str = "absent") -> str:
    return absent if value in (None, "", []) else str(value)


def _yes(flag) -> str:
    return "yes" if flag else "no"


def _lacks(s: dict) -> str:
    """What an x86 CPU lacks of the fast INT8 paths (VNNI, AMX: without them INT8 runs, but hardly faster than FP32)."""
    if s["arch"].lower() not in ("x86_64", "amd64"):
        return ""
    missing = [f for f in ("avx512_vnni", "amx_int8") if f not in s["simd"]]
    return f" (no {', no '.join(missing)})" if missing else ""


def render(r: dict) -> str:
    s, n, g = r["system"], r["nvidia"], r["gpu"]
    lines = [f"system      {s['os']}, Python {s['python']}, {s['arch']}",
             f"cpu         {s['cpu']}, {s['cores']} cores"
             + (f" ({s['usable_cores']} usable)" if s["usable_cores"] != s["cores"] else "")
             + f", memory {_v(s['memory_mib'], '?')} MiB; SIMD {' '.join(s['simd']) or 'unknown'}" + _lacks(s)]
    j = r["jetson"]
    if j:
        pm = j["power_mode"]
        lines.append(f"jetson      {_v(j['model'], 'unknown board')}: L4T {j['l4t']}, JetPack {_v(j['jetpack'], '?')}"
                     f", nvidia-l4t-core {_v(j['l4t_core_package'])}; power mode "
                     + (f"{pm['id']} {pm['name'] or ''}".rstrip() if pm else "unreadable"))
    fit = n["fit"]
    lines += [f"nvidia      driver {_v(n['driver'])}, driver CUDA {_v(n['driver_cuda'])}, CUDA runtime "
              f"{_v(n['cuda_runtime'])}, cuDNN {_v(n['cudnn'])}",
              f"tensorrt    {_v(n['tensorrt'])}" + (f" (for CUDA {n['tensorrt_cuda']})" if n["tensorrt_cuda"] else "")
              + f"; PyCUDA {_v(n['pycuda'])}; cuda-python {_v(n['cuda_python'])}"
              + (f"; {'fits' if fit['ok'] else 'DOES NOT FIT'}: {fit['why']}" if fit else "")]
    if g:
        kind = {True: "integrated", False: "discrete", None: "?"}[g["integrated"]]
        lines.append(f"gpu         {g['name']} (sm {g['compute_capability']}), {_v(g['memory_mib'], '?')} MiB, {kind}"
                     f", DLA cores {_v(g['dla_cores'], '?')}")
    else:
        lines.append("gpu         none visible (pycuda, cuda-python, torch.cuda)")
    o = r["onnxruntime"]
    lines.append(f"onnxruntime {o['version']}: {', '.join(o['providers'])}" if o else "onnxruntime absent")
    ov = r["openvino"]
    lines.append(f"openvino    {ov['version']}: {', '.join(ov['devices'])}" if ov else "openvino    absent")
    cv = r["opencv"]
    if cv:
        d = cv["demo"]
        lines += [f"opencv      {cv['version']} ({', '.join(cv['packages']) or 'system build'}): GUI {cv['gui']}, "
                  f"GStreamer {_yes(cv['gstreamer'])}, FFmpeg {_yes(cv['ffmpeg'])}, V4L2 {_yes(cv['v4l2'])}",
                  f"demo        window {_yes(d['window'])}, cameras {_yes(d['cameras'])}, video files "
                  f"{_yes(d['video_files'])}, csi {_yes(d['csi'])}, GStreamer pipelines "
                  f"{_yes(d['gstreamer_pipelines'])}"]
    else:
        lines.append("opencv      absent (cpnet demo needs it: pip install -e '.[desktop]' or '.[headless]')")
    t = r["torch"]
    lines.append(f"torch       {t['version']}, CUDA {_v(t['cuda'], 'none')}"
                 f"{' (available)' if t['cuda_available'] else ''}" if t else "torch       absent")
    lines.append(f"devices     cameras {', '.join(s['cameras']) or 'none'}; display {_yes(s['display'])}")
    for a in r["artifacts"]:
        lines.append(f"{'ok' if a['runs'] else 'NO':<11} {a['path']} on {a['backend']}" + (f": {a['why']}" if a["why"] else ""))
        if a["rebuild"]:
            lines.append(f"{'':<11}   rebuild: {a['rebuild']}")
        t = a.get("tensorrt")
        if t:
            lines.append(f"{'':<11}   --backend tensorrt: {'yes' if t['runs'] else 'no'}, {t['why']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the verb

DESCRIPTION = """Say what this machine can run and why: libraries, GPU, Jetson release, OpenCV's build, artifacts.

One screen: OS and Python; on a Jetson the L4T/JetPack release and power mode; the NVIDIA driver, CUDA,
cuDNN, TensorRT, PyCUDA and cuda-python and whether they fit together; the GPU; ONNX Runtime's providers;
OpenVINO's devices; OpenCV's build and what it means for cpnet demo; PyTorch; the CPU's SIMD; cameras
and a display. For each artifact given: whether it runs here, on which backend, and the command that
rebuilds it when it cannot. Exit 0 when every artifact given runs here, 1 otherwise."""

EXAMPLES = """cpnet doctor
cpnet doctor export/model.int8.onnx export/model.int8.engine
cpnet doctor export/*.onnx --json doctor.json"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "ARTIFACT", "ONNX files, engines, checkpoints or run dirs to check against this machine",
                nargs="*")
    cli_args.add_json(p, "the whole report (docs/doctor.md has its fields)")


def run(args) -> int:
    if args.json:
        check_output(args.json)
    for a in args.input:
        if not Path(a).exists():
            raise UserError(f"{a}: no such file or directory")
    r = report(args.input)
    print(render(r))
    if args.json:
        atomic_write_json(args.json, r)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    from cpnet.cli import run_verb

    sys.exit(run_verb("pipeline.doctor"))
