"""The ``onnxruntime`` backend: an ONNX file cpnet made, run by ONNX Runtime behind the common interface.

    with OnnxModel("runs/q/export/model.onnx") as m:        # FP32, FP16 or INT8
        logits = m.infer(preprocess(image, m.manifest))     # numpy (1, C, H, W) float32
        labels = m.segment(image_rgb)                       # (h, w) label map
        outputs = m.infer_all(x)                            # {"logits": ..., "prior": ...} (--with-prior files)

The session comes from :func:`cpnet.runtime.ort.make_session`, the one session factory. The
manifest beside the file (``model.onnx.json``) is required: it carries the input size,
normalisation, classes and precision that pre/post-processing and the reports need, and the
sha256 the file is checked against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpnet.runtime.backend import Backend
from cpnet.runtime.errors import UserError
from cpnet.runtime.manifest import read_manifest, verify_sha256
from cpnet.runtime.ort import _ORT_TYPES, make_session


def read_onnx_manifest(path: Path, verify: bool = True) -> dict:
    """The manifest of an ONNX file cpnet made (required), the file checked against its sha256 with ``verify``;
    every backend that runs ONNX files (onnxruntime, openvino) opens them through this."""
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    try:
        manifest = read_manifest(path, required=True)
    except UserError as e:
        if "not found" in str(e):
            raise UserError(f"{path}: its manifest {path.name}.json is missing; make ONNX files with "
                            f"cpnet export (FP32) or cpnet fp16|int8, which write it") from None
        raise
    if manifest.get("kind", "onnx") != "onnx":
        raise UserError(f"{path}: its manifest describes a {manifest.get('kind')!r}, not an ONNX model")
    if verify:
        verify_sha256(path, manifest)
    return manifest


class OnnxModel(Backend):
    """An ONNX file + its manifest, run by ONNX Runtime: the ``onnxruntime`` backend.

    ``infer(batch)`` takes a float32 NCHW batch (numpy or torch) of the model's
    input size and returns float32 logits as numpy; ``model(batch)`` with a torch
    tensor returns a torch tensor, so the object is an ``InferFn`` for
    :func:`cpnet.inference.predict_probs` and :func:`cpnet.evaluate.evaluate_model`.

    ``providers``: onnxruntime provider names or the aliases ``cpu``, ``cuda``,
    ``tensorrt`` (a list or a comma string; default: CPU only); ``threads``:
    intra-op threads (default: ORT's choice). ``verify``: check the file's sha256
    against the manifest, so a file changed or cut short after it was made is refused.
    """

    name = "onnxruntime"

    def __init__(self, path: "str | Path", providers=None, threads: int | None = None, verify: bool = True,
                 **unknown):
        self.refuse_unknown(unknown, ("providers", "threads"))
        path = Path(path)
        manifest = read_onnx_manifest(path, verify=verify)
        super().__init__(str(path), manifest)
        self.session = None
        self.session = make_session(path, threads=threads, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{path}: expected one image input, the model has {len(inputs)}")
        self._input = inputs[0]
        self.input_name = self._input.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = _ORT_TYPES.get(self._input.type, np.float32)
        shape = list(self._input.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise UserError(f"{path}: the model input has shape {shape}, not (N, 3, H, W)")
        graph_hw = [v for v in shape[2:4] if isinstance(v, int)]
        if len(graph_hw) == 2 and "input_size" in manifest and list(self.input_size) != graph_hw:
            raise UserError(f"{path}: its manifest says input_size {list(self.input_size)} but the graph takes "
                            f"{graph_hw[0]}x{graph_hw[1]}; the manifest does not belong to this file")
        self.providers = self.session.get_providers()

    @property
    def input_size(self) -> tuple[int, int]:
        try:
            return super().input_size
        except ValueError:
            h, w = self._input.shape[2:4]
            return int(h), int(w)

    @property
    def num_classes(self) -> int:
        return super().num_classes or int(self.session.get_outputs()[0].shape[1])

    def infer(self, batch) -> np.ndarray:
        """Float32 logits (N, C, H, W) for a preprocessed NCHW batch (numpy or torch)."""
        x = self.checked_batch(batch).astype(self.input_dtype, copy=False)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ValueError(f"{Path(self.path).name} takes batches of {self.fixed_batch}, got {x.shape[0]}")
            return np.concatenate([self._run(x[i:i + 1]) for i in range(x.shape[0])], axis=0)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs in order: ``logits``, then ``prior`` in files exported with --with-prior."""
        return [o.name for o in self.session.get_outputs()] if self.session is not None else [self.output_name]

    def infer_all(self, batch) -> dict[str, np.ndarray]:
        """Every output by name as float32 numpy (``infer`` returns the logits alone)."""
        x = self.checked_batch(batch).astype(self.input_dtype, copy=False)
        names = self.output_names
        parts = [x] if self.fixed_batch in (None, x.shape[0]) else [x[i:i + 1] for i in range(x.shape[0])]
        if len(parts) > 1 and self.fixed_batch != 1:
            raise ValueError(f"{Path(self.path).name} takes batches of {self.fixed_batch}, got {x.shape[0]}")
        runs = [self.session.run(names, {self.input_name: p}) for p in parts]
        return {n: np.concatenate([np.asarray(r[i], dtype=np.float32) for r in runs], axis=0)
                for i, n in enumerate(names)}

    def describe(self) -> str:
        short = ",".join(p.replace("ExecutionProvider", "") for p in self.providers)
        return f"onnxruntime ({short}, {self.precision})"

    def close(self) -> None:
        self.session = None
        super().close()

    def __repr__(self) -> str:
        return (f"OnnxModel({self.path!r}, precision={self.precision}, input={self.input_size}, "
                f"classes={self.num_classes}, providers={self.providers})")
