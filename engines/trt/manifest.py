"""An engine's manifest: what a build records in it, and what opening the engine checks against it: which
TensorRT and GPU may run it, whether its bytes are the ones built, whether it carries host code, and the runtime
settings it needs (pure Python).

An engine is native code that runs on the GPU (and, when version compatible, on the host): one is opened only
when its bytes match the sha256 in the manifest beside it, or when the user says they trust it
(``trust_engine=True`` / ``--trust-engine``). A version-compatible plan embeds the lean runtime (host code), so
the runtime must have ``engine_host_code_allowed = True`` to load it; that is native code run by this process,
so it is allowed only on the user's word: ``--allow-host-code`` / ``allow_host_code=True`` where an engine file
is opened, ``--version-compatible`` on the build command line for the build's own load check; never because a
manifest says so (the manifest and its sha256 are an integrity check, not authentication). A DLA plan needs
the runtime told its core (``IRuntime.DLA_core`` before deserializing, "Working with DLA"), or an engine built
for core 1 runs on core 0. See docs/architecture.md §2 for the manifest's fields.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cpnet.runtime import UserError
from cpnet.runtime.manifest import derive_manifest
from cpnet.runtime.manifest import versions as library_versions

from . import hardware
from .options import BuildOptions
from .versions import major_of, same_version, version_compatible_runs

PRECISION_RECORDS = ("flavour", "calibration")  # the INT8 parent's, kept beside the engine's own


def engine_manifest(onnx_path: Path, onnx_manifest: dict, trt_version: str, gpu: dict | None,
                    opts: BuildOptions, strongly_typed: bool, layer_summary: dict | None, engine_sha256: str,
                    placement: dict | None = None, layers_file: str | None = None) -> dict:
    """The manifest ``cpnet build`` writes beside an engine (docs/architecture.md §2): the ONNX parent's interface
    and lineage, how it was built (TensorRT, typing, portability, GPU, device, options), what the engine
    inspector says of its layers, its sha256 and the library versions."""
    precision = "fp16" if opts.fp16_flag else onnx_manifest.get("precision", "fp32")
    m = derive_manifest(onnx_path, onnx_manifest, "engine", precision,
                        **{k: onnx_manifest[k] for k in PRECISION_RECORDS if k in onnx_manifest})
    m.update({
        # builder-flags: a 10.x DLA build (FP16, + INT8 for a Q/DQ file; engines.trt.dla)
        "precision_mode": "fp16-flag" if opts.fp16_flag else "strongly-typed" if strongly_typed else "builder-flags",
        "tensorrt": {"version": trt_version, "major": major_of(trt_version),
                     "strongly_typed": strongly_typed, "version_compatible": bool(opts.version_compatible),
                     "hardware_compatibility": opts.hardware_compatibility},
        "gpu": gpu,
        "device": f"dla:{opts.dla_core}" if opts.dla_core is not None else "gpu",
        "build_options": opts.to_manifest(),
        "layer_precisions": layer_summary,
        "layer_placement": placement,  # per device and precision, the GPU fallbacks, reformats (engines.layers.placement)
        "layers_file": layers_file,  # the inspector's JSON beside the engine, by name
        "sha256": engine_sha256,
        "versions": library_versions(),
    })
    return m


@dataclass(frozen=True)
class DeserializeOptions:
    """Runtime settings an engine needs before ``deserialize_cuda_engine``: ``engine_host_code_allowed``
    (version-compatible plans carry the lean runtime: host code) and ``dla_core`` (IRuntime.DLA_core)."""

    engine_host_code_allowed: bool = False
    dla_core: int | None = None

    @classmethod
    def from_build_options(cls, opts: "BuildOptions | dict | None") -> "DeserializeOptions":
        """For the build's load check of the bytes just built in this process: ``--version-compatible`` on
        the user's own build command line is their word that the plan may carry host code."""
        d = asdict(opts) if isinstance(opts, BuildOptions) else dict(opts or {})
        dla = d.get("dla_core")
        return cls(engine_host_code_allowed=bool(d.get("version_compatible")),
                   dla_core=int(dla) if dla is not None else None)

    @classmethod
    def from_manifest(cls, manifest: dict | None, allow_host_code: bool = False) -> "DeserializeOptions":
        """The DLA core from an engine manifest (its build options, else its ``device`` field); host code only
        when the caller allows it (``allow_host_code``: the user's ``--allow-host-code``), never because the
        manifest says so: the manifest is an unsigned file beside the engine, and its sha256 an integrity
        check, not an authentication, so a swapped engine with a matching manifest would pass it."""
        if manifest is None:
            return cls(engine_host_code_allowed=bool(allow_host_code))
        dla = (manifest.get("build_options") or {}).get("dla_core")
        if dla is None:
            m = re.fullmatch(r"dla:(\d+)", str(manifest.get("device") or ""))
            dla = int(m.group(1)) if m else None
        return cls(engine_host_code_allowed=bool(allow_host_code), dla_core=int(dla) if dla is not None else None)


def check_host_code(manifest: dict | None, allow_host_code: bool, engine_path: str) -> None:
    """A manifest that says version compatible means the plan carries host code: refuse it, before
    TensorRT sees a byte, unless the user allowed host code."""
    vc = bool(((manifest or {}).get("tensorrt") or {}).get("version_compatible")
              or ((manifest or {}).get("build_options") or {}).get("version_compatible"))
    if vc and not allow_host_code:
        raise UserError(f"{engine_path}: a version-compatible engine carries host code (native code this process "
                        f"would run); pass --allow-host-code (allow_host_code=True) if you built it or trust its "
                        f"source, or rebuild it here without --version-compatible")



#: build option -> its `cpnet build` flag, for the exact rebuild command (value None: a switch)
REBUILD_FLAGS = {"dla_core": "--dla-core", "strict_dla": None, "fp16_flag": None, "version_compatible": None,
                 "hardware_compatibility": "--hardware-compatibility", "batch": "--batch", "opt_batch": "--opt-batch",
                 "opt_level": "--opt-level", "tf32": None, "workspace_mib": "--workspace"}
REBUILD_DEFAULTS = {"hardware_compatibility": "none", "batch": 1}


def rebuild_hint(manifest: dict | None, engine_path: str) -> str:
    """The exact ``cpnet build`` command that makes this engine again: its parent ONNX file, ``-o`` the engine, and
    every build option of its manifest that is not the default (a workspace only where it is not this machine's)."""
    manifest = manifest or {}
    parent = (manifest.get("parent") or {}).get("path") or "<model.onnx>"
    words = ["cpnet", "build", parent, "-o", str(engine_path)]
    built = manifest.get("build_options") or {}
    for key, flag in REBUILD_FLAGS.items():
        value = built.get(key)
        if value in (None, False) or value == REBUILD_DEFAULTS.get(key):
            continue
        if key == "workspace_mib" and int(value) == hardware.default_workspace_mib():
            continue
        words += [f"--{key.replace('_', '-')}"] if flag is None else [flag, str(value)]
    return " ".join(words)


def _hardware_level(manifest: dict) -> str:
    return str((manifest.get("tensorrt") or {}).get("hardware_compatibility")
               or (manifest.get("build_options") or {}).get("hardware_compatibility") or "none")


def check_engine_manifest(manifest: dict | None, trt_version: str, gpu: dict | None,
                          engine_path: str, trust: bool = False, jetson: bool | None = None) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU (UserError, one line); return warnings.

    TensorRT engines are specific to the TensorRT version and GPU they were built with; a
    mismatched plan deserializes to None with only a log line, so we compare the manifest first.
    Version-compatible engines run as :func:`version_compatible_runs` says. Hardware-compatible
    engines (``ampere+``) run on any GPU of sm 8.0 or newer, ``same-cc`` ones on any GPU of the same
    compute capability; otherwise a different compute capability is refused and a different GPU
    model of the same compute capability is a warning (it loads, with tactics tuned elsewhere).
    An engine without a manifest is refused unless ``trust``: it is native code we cannot vouch for.
    """
    if manifest is None:
        if not trust:
            raise UserError(f"{engine_path}: no manifest beside the engine, so neither its origin nor its sha256 "
                            f"can be checked, and an engine is native code; rebuild it with cpnet build "
                            f"<model.onnx>, or pass --trust-engine (trust_engine=True) if you made it yourself")
        return [f"{engine_path}: no manifest beside the engine; trusted as asked, TensorRT version and GPU not "
                f"checked"]
    warnings_: list[str] = []
    built = ((manifest.get("tensorrt") or {}).get("version")
             or (manifest.get("versions") or {}).get("tensorrt"))
    vc = bool((manifest.get("tensorrt") or {}).get("version_compatible")
              or (manifest.get("build_options") or {}).get("version_compatible"))
    hint = rebuild_hint(manifest, engine_path)
    built_gpu = manifest.get("gpu") or {}
    where_built = f"TensorRT {built}" + (f" on {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')})"
                                         if built_gpu.get("name") else "")
    if built is None:
        warnings_.append(f"{engine_path}: manifest does not say which TensorRT built the engine")
    else:
        ok = version_compatible_runs(built, trt_version) if vc else same_version(built, trt_version)
        if not ok:
            why = ("a version-compatible engine runs on the same or a newer release of its major (and TensorRT "
                   "10 ones on 11)" if vc else "engines do not move between TensorRT versions")
            raise UserError(f"{engine_path}: built with {where_built}, but this is TensorRT {trt_version}; "
                            f"{why}: rebuild it here with {hint}")
    level = _hardware_level(manifest)
    if gpu is None:
        warnings_.append(f"{engine_path}: could not identify this GPU; GPU match not checked")
        return warnings_
    here = f"{gpu.get('name')} (sm {gpu.get('compute_capability')})"
    if level == "ampere+":
        if jetson is None:
            jetson = hardware.is_jetson()
        cc = hardware.compute_capability(gpu)
        if jetson:
            raise UserError(f"{engine_path}: a hardware-compatible (ampere+) engine does not run under JetPack; "
                            f"rebuild it on this Jetson with {hint}")
        if cc is not None and cc < hardware.AMPERE_CC:
            raise UserError(f"{engine_path}: built hardware-compatible for Ampere and newer GPUs (sm 8.0+), but "
                            f"this GPU is {here}; rebuild it here with {hint}")
        return warnings_
    if built_gpu.get("compute_capability"):
        if str(built_gpu["compute_capability"]) != str(gpu.get("compute_capability")):
            raise UserError(f"{engine_path}: built for {built_gpu.get('name')} (sm {built_gpu['compute_capability']}), "
                            f"but this GPU is {here}; rebuild it here with {hint}")
        if (level == "none" and built_gpu.get("name") and gpu.get("name")
                and built_gpu["name"] != gpu["name"]):
            warnings_.append(f"{engine_path}: built on {built_gpu['name']}, running on {gpu['name']} (same compute "
                             f"capability); it loads, but rebuild with {hint} for tactics tuned to this GPU")
    return warnings_


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_engine_bytes(data: bytes, manifest: dict | None, engine_path: str, trust: bool = False) -> None:
    """Refuse engine bytes whose sha256 is not the manifest's (a changed, truncated or swapped file).

    The bytes checked are the bytes then deserialized, so nothing can change in between. A manifest
    without a sha256 is refused unless ``trust``; no manifest is :func:`check_engine_manifest`'s case.
    """
    if manifest is None:
        return
    expected = manifest.get("sha256")
    if not expected:
        if trust:
            return
        raise UserError(f"{engine_path}: its manifest records no sha256, so the engine cannot be verified; rebuild "
                        f"it with {rebuild_hint(manifest, engine_path)} or pass --trust-engine")
    actual = sha256_bytes(data)
    if actual != expected:
        raise UserError(f"{engine_path}: file does not match its manifest (sha256 {actual[:12]}... != "
                        f"{str(expected)[:12]}...; changed, truncated or replaced after it was built); rebuild it "
                        f"with {rebuild_hint(manifest, engine_path)}")

