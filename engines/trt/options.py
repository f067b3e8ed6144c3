"""What ``cpnet build`` is asked to build, and which requests this TensorRT, GPU and file can build (pure Python).

- Builder flags. ``BuilderFlag.FP16``/``INT8``, ``int8_calibrator`` and the quantization flags are removed in
  11.x ("Removed Python APIs and Replacements", 10.x -> 11.x migration guide); the FP16-flag path is therefore
  TensorRT 10 only.
- Hardware compatibility (``IBuilderConfig.hardware_compatibility_level``): ``AMPERE_PLUS`` plans run on any
  Ampere-or-newer GPU (sm 8.0+) and can only be built on one; ``SAME_COMPUTE_CAPABILITY`` plans run on GPUs of
  the same compute capability. Neither is for DLA or JetPack.
- DLA: which versions have it, and how each builds, is :mod:`engines.trt.dla`'s table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cpnet.runtime import UserError

from . import dla, hardware
from .versions import major_of

#: --hardware-compatibility values -> trt.HardwareCompatibilityLevel member names
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class BuildOptions:
    """How to build: the ONNX file, the engine path (default: beside it), builder workspace (MiB), timing
    cache ("" = none), optimization level 0-5, DLA core (+ strict: no GPU fallback), TensorRT 10's FP16
    flag, version compatibility, hardware compatibility (none | ampere+ | same-cc), max batch of a
    dynamic-batch file and the batch its kernels are tuned for (``opt_batch``, default 1), TF32 for FP32
    layers, TensorRT's verbose log, progress lines."""

    onnx: str
    output: str | None = None
    workspace_mib: int | None = None
    timing_cache: str | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    fp16_flag: bool = False
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    batch: int = 1
    opt_batch: int | None = None
    strict_dla: bool = False
    gpu_fallback: bool = True
    tf32: bool = False
    verbose: bool = False
    progress: bool = True

    def to_manifest(self) -> dict:
        d = asdict(self)
        for k in ("onnx", "verbose", "progress"):
            d.pop(k)
        return d


def is_cpu_flavour(onnx_manifest: dict | None) -> bool:
    if not onnx_manifest or onnx_manifest.get("precision") != "int8":
        return False
    calib = onnx_manifest.get("calibration") or {}
    return str(calib.get("flavour", onnx_manifest.get("flavour", ""))).lower() == "cpu"


def cpu_flavour_message(onnx_path: str) -> str:
    return (f"{onnx_path} is the cpu flavour of INT8 (uint8 asymmetric activations), which TensorRT's parser "
            f"rejects; make the TensorRT flavour with `cpnet int8 model.onnx --calib-data ... "
            f"--flavour tensorrt` and build from the model.int8.onnx it writes")


def validate_build_options(opts: BuildOptions, trt_version: str, onnx_manifest: dict | None,
                           gpu: dict | None = None, jetson: bool | None = None) -> str:
    """Refuse option combinations this TensorRT (and GPU, where given) cannot build; return the check target."""
    major = major_of(trt_version)
    if major < 10:
        raise UserError(f"TensorRT {trt_version} is too old: this project builds with TensorRT 10 or 11")
    if is_cpu_flavour(onnx_manifest):
        raise UserError(cpu_flavour_message(opts.onnx))
    if opts.fp16_flag:
        if major >= 11:
            raise UserError(f"--fp16-flag needs TensorRT 10: TensorRT {trt_version} removed BuilderFlag.FP16 "
                            f"(networks are always strongly typed); build from model.fp16.onnx instead")
        prec = (onnx_manifest or {}).get("precision", "fp32")
        if prec != "fp32":
            raise UserError(f"--fp16-flag applies to the FP32 model.onnx; {opts.onnx} is already {prec} "
                            f"(typed in the file): build it without --fp16-flag")
    if opts.dla_core is not None:
        if opts.dla_core < 0:
            raise UserError(f"--dla-core must be >= 0, got {opts.dla_core}")
        dla.dla_path(trt_version)  # the support matrix: a one-line refusal naming the versions with DLA
    if opts.opt_level is not None and not 0 <= opts.opt_level <= 5:
        raise UserError(f"--opt-level must be in 0..5 (TensorRT's builder_optimization_level), got {opts.opt_level}")
    if opts.workspace_mib is not None and opts.workspace_mib <= 0:
        raise UserError(f"--workspace must be a positive number of MiB, got {opts.workspace_mib}")
    if opts.batch < 1:
        raise UserError(f"--batch must be >= 1, got {opts.batch}")
    if opts.opt_batch is not None and not 1 <= opts.opt_batch <= opts.batch:
        raise UserError(f"--opt-batch must be in 1..--batch ({opts.batch}), got {opts.opt_batch}")
    validate_hardware_compatibility(opts, gpu, jetson)
    if opts.dla_core is not None:
        return "dla"
    return "trt11" if major >= 11 else "trt10"


def validate_hardware_compatibility(opts: BuildOptions, gpu: dict | None = None, jetson: bool | None = None) -> None:
    """--hardware-compatibility as NVIDIA documents HardwareCompatibilityLevel: AMPERE_PLUS "is only supported for
    engines built on NVIDIA Ampere and later GPUs", SAME_COMPUTE_CAPABILITY on Turing and later; neither for DLA
    or JetPack ("Hardware Compatibility", developer guide)."""
    level = opts.hardware_compatibility
    if level not in HARDWARE_LEVELS:
        raise UserError(f"--hardware-compatibility must be one of {', '.join(HARDWARE_LEVELS)}, got {level!r}")
    if level == "none":
        return
    if opts.dla_core is not None:
        raise UserError(f"--hardware-compatibility {level} does not apply to DLA engines; drop one of the two")
    if jetson is None:
        jetson = hardware.is_jetson()
    if jetson:
        raise UserError(f"--hardware-compatibility {level} is for desktop and data-center GPUs; JetPack does not "
                        f"support it: build without it on each Jetson")
    cc = hardware.compute_capability(gpu)
    need = hardware.AMPERE_CC if level == "ampere+" else hardware.TURING_CC
    if cc is not None and cc < need:
        raise UserError(f"--hardware-compatibility {level} needs a build GPU of sm {need[0]}.{need[1]} or newer; "
                        f"this is {gpu.get('name')} (sm {cc[0]}.{cc[1]})")

