"""Label-free logit drift: how far a reduced-precision model's logits move from the FP32 model's, on calibration
images (no labels needed; the mIoU drift against labels is ``cpnet report``'s).

    ref = reference(fp32_path, images, threads=2)        # FP32 logits, kept once
    result = ref.measure(candidate_path)                 # a cpnet.runtime.compare.Comparison
    result.disagreement_percent, result.max_rel, result.mean_abs

The FP32 logits are computed once and each candidate (an FP16 round, an INT8
build, one node quantized alone) is run on the same images and compared with
:func:`cpnet.runtime.compare.compare`, so FP16, INT8, sensitivity and export
parity report the same figures under the same names. Candidates run as they are
deployed, with ONNX Runtime's full graph optimisation on the CPU.

The reference holds its logits in memory up to ``budget_bytes`` (fewer images
then), or on disk in ``spill_dir`` when every image must count.

A model that misses its drift limit is written anyway (the closest result, its
manifest saying so), and :class:`DriftLimitExceeded` is raised: exit 1 on the
command line, and the caller of the library gets the path and the manifest
from the exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cpnet.runtime import CheckFailed, UserError, atomic_write_json
from cpnet.runtime.compare import Comparison
from cpnet.runtime.ort import make_session


class DriftLimitExceeded(CheckFailed):
    """A reduced-precision model misses its drift limit (exit 1). The closest result was still written:
    ``path`` and ``manifest`` say where and what was measured."""

    def __init__(self, message: str, path: "Path | None" = None, manifest: "dict | None" = None):
        super().__init__(message)
        self.path = path
        self.manifest = manifest


def run_session(sess, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Float32 logits of an onnxruntime session for each (1, 3, H, W) image."""
    name = sess.get_inputs()[0].name
    return [np.asarray(sess.run(None, {name: x})[0], dtype=np.float32) for x in images]


@dataclass
class Reference:
    """The FP32 model's logits on a few images (arrays, or .npy files when spilled to disk)."""

    images: list[np.ndarray]
    logits: list = field(default_factory=list)
    threads: int | None = None

    def measure(self, model) -> Comparison:
        """Run ``model`` (a path, bytes or an onnx.ModelProto) on the images and compare with the FP32 logits."""
        sess = make_session(model, threads=self.threads)
        name = sess.get_inputs()[0].name
        result = Comparison()
        for x, ref in zip(self.images, self.logits, strict=True):
            out = np.asarray(sess.run(None, {name: x})[0], dtype=np.float32)
            result.update(out, np.load(ref) if isinstance(ref, Path) else ref)
        return result


def reference(model, images: Iterable[np.ndarray], threads: int | None = None, budget_bytes: int | None = None,
              spill_dir: "str | Path | None" = None, what: str = "the calibration images") -> Reference:
    """FP32 logits of ``model`` on ``images``: in memory until ``budget_bytes`` is used (the remaining images are
    not taken), or saved in ``spill_dir`` (all images, little memory). ``what`` names the images in errors."""
    sess = make_session(model, threads=threads)
    ref = Reference([], [], threads)
    used = 0
    for i, x in enumerate(images):
        out = run_session(sess, [x])[0]
        ref.images.append(x)
        if spill_dir is not None:
            path = Path(spill_dir) / f"reference_{i}.npy"
            np.save(path, out)
            ref.logits.append(path)
        else:
            ref.logits.append(out)
            used += out.nbytes + x.nbytes
        if budget_bytes is not None and used >= budget_bytes:
            break
    if not ref.images:
        raise UserError(f"{what}: no image could be read to measure the drift against FP32")
    return ref


def make_and_report(make, options, args) -> int:
    """The end of ``cpnet fp16|int8``: ``make(input, output, options, calibration, runtime)`` from the parsed
    flags, the manifest to ``--json`` (also when the drift limit is missed, before that error goes on to the
    command line) and the path made on stdout."""
    from cpnet.cli.args import calibration_options, runtime_options
    from cpnet.runtime.files import check_output

    if args.json:
        check_output(args.json, what="--json file")  # before any work
    try:
        path, manifest = make(args.input, args.output, options, calibration_options(args), runtime_options(args))
    except DriftLimitExceeded as e:
        if args.json and e.manifest is not None:
            atomic_write_json(args.json, e.manifest)
        raise
    if args.json:
        atomic_write_json(args.json, manifest)
    print(path)
    return 0
