"""ONNX Runtime: the one loader for every ONNX file cpnet makes (FP32, FP16, INT8).

    with OnnxModel("runs/q/export/model.onnx") as m:
        logits = m.infer(preprocess(image, m.manifest))      # numpy (1, C, H, W) float32
        probs = predict_probs(x, m, m.input_size[0], m.num_classes)   # m(batch) -> torch tensor

The manifest beside the file (``model.onnx.json``) is required: it carries the
input size, normalisation, classes and precision that pre/post-processing and
the reports need. A missing, corrupt or truncated file gives a one-line
:class:`~cpnet.io.UserError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .io import UserError, read_manifest, sha256_file

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return line[:240]


def resolve_providers(providers: "Sequence[str] | None") -> list[str]:
    """Provider names (aliases cpu/cuda/tensorrt allowed) checked against this onnxruntime; CPU always last."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not providers:
        return ["CPUExecutionProvider"]
    out = []
    for p in providers:
        name = PROVIDER_ALIASES.get(str(p).lower(), str(p))
        if name not in available:
            raise UserError(f"onnxruntime provider {p!r} is not available here (available: {', '.join(available)}); "
                            f"install onnxruntime-gpu for CUDA/TensorRT")
        if name not in out:
            out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def make_session(path: "str | Path", providers: "Sequence[str] | None" = None, threads: int | None = None,
                 optimization: str = "all"):
    """An onnxruntime.InferenceSession for ``path``; an unloadable file is a one-line UserError.

    ``optimization``: ``"all"`` (ORT's default, for inference), ``"basic"`` or
    ``"none"`` (to observe the graph's own tensors, e.g. when exposing them).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=resolve_providers(providers))
    except UserError:
        raise
    except Exception as e:  # ORT raises its own Fail / InvalidProtobuf / InvalidGraph types
        raise UserError(f"{path}: not a valid ONNX model ({_first_line(e)}); re-export it "
                        f"(python -m cpnet.export, or python -m quantize for fp16/int8 files)") from None


class OnnxModel:
    """An ONNX file + its manifest, run by ONNX Runtime.

    ``infer(batch)`` takes a float32 NCHW batch (numpy or torch) of the model's
    input size and returns float32 logits as numpy; ``model(batch)`` does the
    same but returns a torch tensor, so the object is an ``InferFn`` for
    :func:`cpnet.inference.predict_probs` and
    :func:`cpnet.evaluate.evaluate_model` (``infer=model``).

    ``providers``: onnxruntime provider names or the aliases ``cpu``, ``cuda``,
    ``tensorrt`` (default: CPU only); ``threads``: intra-op threads (default:
    ORT's choice). ``verify``: check the file's sha256 against the manifest, so a
    file changed or cut short after it was made is refused.
    """

    def __init__(self, path: "str | Path", providers: "Sequence[str] | None" = None, threads: int | None = None,
                 verify: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: ONNX file not found")
        try:
            self.manifest = read_manifest(self.path, required=True)
        except UserError as e:
            if "not found" in str(e):
                raise UserError(f"{self.path}: its manifest {self.path.name}.json is missing; make ONNX files with "
                                f"python -m cpnet.export (FP32) or python -m quantize fp16|int8, which write it") from None
            raise
        if self.manifest.get("kind", "onnx") != "onnx":
            raise UserError(f"{self.path}: its manifest describes a {self.manifest.get('kind')!r}, not an ONNX model")
        self.session = make_session(self.path, providers, threads)
        expected = self.manifest.get("sha256")
        if verify and expected and sha256_file(self.path) != expected:
            raise UserError(f"{self.path}: file does not match its manifest (sha256 differs; changed or truncated "
                            f"after it was made); re-export it")
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1:
            raise UserError(f"{self.path}: expected one image input, the model has {len(inputs)}")
        self._input = inputs[0]
        self.input_name = self._input.name
        self.output_name = outputs[0].name
        self.input_dtype = _ORT_TYPES.get(self._input.type, np.float32)
        shape = list(self._input.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.providers = self.session.get_providers()

    # -- what the manifest says
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        from .preprocess import input_size_of

        try:
            return input_size_of(self.manifest)
        except ValueError:
            h, w = self._input.shape[2:4]
            return int(h), int(w)

    @property
    def num_classes(self) -> int:
        classes = self.manifest.get("classes")
        if classes:
            return len(classes)
        shape = (self.manifest.get("output") or {}).get("shape") or self.session.get_outputs()[0].shape
        return int(shape[1])

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes") or [])

    @property
    def palette(self) -> list:
        return list(self.manifest.get("palette") or [])

    # -- running
    def infer(self, batch) -> np.ndarray:
        """Float32 logits (N, C, H, W) for a preprocessed NCHW batch (numpy or torch)."""
        if self.session is None:
            raise RuntimeError(f"{self.path}: the model was closed")
        if hasattr(batch, "detach"):  # torch tensor, without importing torch here
            batch = batch.detach().cpu().float().numpy()
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ValueError(f"{self.path.name} takes batches of {self.fixed_batch}, got {x.shape[0]}")
            outs = [self._run(x[i:i + 1]) for i in range(x.shape[0])]
            return np.concatenate(outs, axis=0)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def __call__(self, batch):
        import torch

        return torch.from_numpy(self.infer(batch))

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "OnnxModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, precision={self.precision}, input={self.input_size}, "
                f"classes={self.num_classes}, providers={self.providers})")
