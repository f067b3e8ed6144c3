"""The ``openvino`` backend: an ONNX file cpnet made (FP32, FP16 or either INT8 flavour), run by Intel's OpenVINO.

    with engines.open("model.int8.onnx", backend="openvino", precision="bf16", threads=2) as m:
        logits = m.infer(x)                  # numpy (1, C, H, W) float32
        m.runs_as                            # "bf16": the precision the compiled model reports, read back
        outputs = m.infer_all(x)             # {"logits": ..., "prior": ...} (--with-prior files)

Why a precision is always asked for and read back: OpenVINO's CPU plugin runs float layers in bf16 by
default wherever the CPU has AVX512_BF16 or AMX (its ``INFERENCE_PRECISION_HINT`` defaults to bf16
there), so a row that says "f32" could run in bf16 unseen. This backend sets the hint on every compile
(default ``f32``) and reads the effective value back from the compiled model; a hint the device cannot
run (bf16 without BF16, f16 without FP16 in the device's ``OPTIMIZATION_CAPABILITIES``) is refused in
one line instead of silently falling back. :func:`precisions_here` says which hints apply on a device,
for the drift report's rows. Q/DQ pairs of the INT8 files run as INT8 kernels (OpenVINO's low-precision
transformations); the hint then applies to the layers left in float.

Options (``engines.open(path, backend="openvino", ...)``, or ``--backend-options`` on the command line):
``device`` (``CPU``; ``GPU``, ``NPU`` and ``AUTO`` are passed through, untested here), ``precision``
(``f32``, ``bf16``, ``f16``), ``threads`` (``INFERENCE_NUM_THREADS``), ``performance``
(``latency`` or ``throughput``: ``PERFORMANCE_HINT``), ``cache_dir`` (``CACHE_DIR``: the compiled model
is kept there, so the next start skips compilation), ``profile`` (``PERF_COUNT``: per-layer times,
:meth:`OpenVinoModel.profile`). Imports no PyTorch; without OpenVINO it says so in one line (exit 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpnet.runtime.backend import Backend
from cpnet.runtime.errors import MissingDependency, UserError

from .onnxruntime_backend import read_onnx_manifest

#: precision option -> (the hint's element type name, the OPTIMIZATION_CAPABILITIES entry it needs)
PRECISIONS = {"f32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "f16": ("f16", "FP16")}
PERFORMANCE = ("latency", "throughput")
#: devices that pick or combine real ones, passed through without checking they are present
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
OPTIONS = ("device", "precision", "threads", "performance", "cache_dir", "profile")
INSTALL = "pip install -e '.[openvino]' (or pip install openvino)"


def _reason(e: Exception) -> str:
    """OpenVINO's exceptions start with the C++ source line; the reason is the last line that is not one."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return lines[-1] if lines else type(e).__name__


def _openvino():
    try:
        import openvino as ov
    except ImportError as e:
        raise MissingDependency(f"openvino backend: OpenVINO is not installed ({e}); {INSTALL}") from None
    return ov


def capabilities(device: str = "CPU") -> list[str]:
    """The device's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``['FP32', 'BF16', 'INT8', ...]``)."""
    ov = _openvino()
    try:
        return [str(c) for c in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError as e:
        raise UserError(f"openvino backend: device {device!r} is not available here ({_reason(e)}); "
                        f"OpenVINO sees {', '.join(ov.Core().available_devices)}") from None


def precisions_here(device: str = "CPU") -> list[str]:
    """The precision hints this device runs, f32 first: bf16 where it has BF16 (AVX512_BF16 or AMX on a CPU),
    f16 where it has FP16 (AVX512_FP16)."""
    caps = set(capabilities(device))
    return [p for p, (_, cap) in PRECISIONS.items() if cap in caps]


def installed() -> bool:
    try:
        _openvino()
    except MissingDependency:
        return False
    return True


class OpenVinoModel(Backend):
    """An ONNX file + its manifest, compiled by OpenVINO: the ``openvino`` backend (options: the module docstring)."""

    name = "openvino"

    def __init__(self, path: "str | Path", device: str = "CPU", precision: str = "f32", threads: int | None = None,
                 performance: str = "latency", cache_dir: "str | Path | None" = None, profile: bool = False,
                 verify: bool = True, **unknown):
        self.refuse_unknown(unknown, OPTIONS)
        path = Path(path)
        manifest = read_onnx_manifest(path, verify=verify)
        super().__init__(str(path), manifest)
        self.compiled = None
        ov = _openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        precision = str(precision).lower()
        if precision not in PRECISIONS:
            raise UserError(f"openvino backend: precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        performance = str(performance).lower()
        if performance not in PERFORMANCE:
            raise UserError(f"openvino backend: performance {performance!r}: choose latency or throughput")
        self.device = str(device).upper()
        core = ov.Core()
        available = list(core.available_devices)
        if self.device.split(":")[0] not in VIRTUAL_DEVICES and \
                self.device.split(".")[0] not in {d.split(".")[0] for d in available}:
            raise UserError(f"openvino backend: device {self.device} is not available here (OpenVINO sees "
                            f"{', '.join(available) or 'none'})")
        if self.device == "CPU":
            caps = capabilities(self.device)
            need = PRECISIONS[precision][1]
            if need not in caps:
                raise UserError(f"openvino backend: precision {precision} needs {need} on the CPU, which this one lacks "
                                f"(OPTIMIZATION_CAPABILITIES: {', '.join(caps)}); use precision=f32")
        config = {hints.inference_precision(): getattr(ov.Type, PRECISIONS[precision][0]),
                  hints.performance_mode(): getattr(hints.PerformanceMode, performance.upper())}
        if threads:
            config[props.inference_num_threads()] = int(threads)
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config[props.cache_dir()] = str(cache_dir)
        if profile:
            config[props.enable_profiling()] = True
        try:
            self.compiled = core.compile_model(str(path), self.device, config)
        except RuntimeError as e:
            raise UserError(f"{path}: OpenVINO cannot compile it for {self.device}: {_reason(e)}") from None
        self.precision_hint = precision
        #: the precision the compiled model reports it runs its float layers in (read back, never assumed)
        self.runs_as = self._read_back(hints.inference_precision())
        if self.runs_as != PRECISIONS[precision][0] and self.device == "CPU":
            raise UserError(f"{path}: asked OpenVINO for {precision}, the compiled model runs {self.runs_as}")
        self.threads = threads
        self.performance = performance
        self.request = self.compiled.create_infer_request()
        inputs = self.compiled.inputs
        if len(inputs) != 1:
            raise UserError(f"{path}: expected one image input, the model has {len(inputs)}")
        shape = inputs[0].get_partial_shape()
        if shape.rank.get_length() != 4:
            raise UserError(f"{path}: the model input has shape {shape}, not (N, 3, H, W)")
        batch = shape[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        self._outputs = [o.get_any_name() for o in self.compiled.outputs]

    def _read_back(self, key) -> str:
        value = self.compiled.get_property(key)
        return str(getattr(value, "to_string", lambda: value)())

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs in order: ``logits``, then ``prior`` in files exported with --with-prior."""
        return list(self._outputs)

    def _run(self, x: np.ndarray, outputs: "range | list[int]") -> list[np.ndarray]:
        self.request.infer({0: x})
        # copies, of the outputs asked for only: the request's output buffers are reused by the next call
        return [np.array(self.request.get_output_tensor(i).data, dtype=np.float32) for i in outputs]

    def _parts(self, x: np.ndarray) -> list[np.ndarray]:
        if self.fixed_batch in (None, x.shape[0]):
            return [x]
        if self.fixed_batch != 1:
            raise ValueError(f"{Path(self.path).name} takes batches of {self.fixed_batch}, got {x.shape[0]}")
        return [x[i:i + 1] for i in range(x.shape[0])]

    def infer(self, batch) -> np.ndarray:
        """Float32 logits (N, C, H, W) for a preprocessed NCHW batch (numpy or torch)."""
        return self._outputs_of(batch, [0])[0]

    def infer_all(self, batch) -> dict[str, np.ndarray]:
        """Every output by name as float32 numpy."""
        return dict(zip(self._outputs, self._outputs_of(batch, range(len(self._outputs)))))

    def _outputs_of(self, batch, outputs) -> list[np.ndarray]:
        x = self.checked_batch(batch)  # closed, or not the model's input size: one line, as every backend
        runs = [self._run(part, outputs) for part in self._parts(x)]
        return runs[0] if len(runs) == 1 else [np.concatenate(r, axis=0) for r in zip(*runs)]

    def profile(self) -> list[dict]:
        """Per-layer times of the last ``infer`` (needs ``profile=True``): one dict per executed layer, slowest
        first, with its name, layer type, the kernel OpenVINO chose (``exec_type``, e.g. ``brgconv_avx512_amx_I8``)
        and the microseconds it took."""
        out = [{"node": p.node_name, "type": p.node_type, "exec_type": p.exec_type,
                "us": p.real_time.total_seconds() * 1e6}
               for p in self.request.get_profiling_info() if str(p.status).endswith("EXECUTED")]
        return sorted(out, key=lambda d: -d["us"])

    def describe(self) -> str:
        return f"openvino ({self.device}, {self.precision} file, runs as {self.runs_as})"

    def close(self) -> None:
        self.request = None
        self.compiled = None
        super().close()

    def __repr__(self) -> str:
        return (f"OpenVinoModel({self.path!r}, precision={self.precision}, runs_as={getattr(self, 'runs_as', None)}, "
                f"device={getattr(self, 'device', None)})")
