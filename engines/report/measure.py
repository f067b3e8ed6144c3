"""One pass of one artifact over the images: its predictions, per-image class counts, agreement with the
reference, and its latency."""

from __future__ import annotations

import heapq
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from cpnet.runtime import UserError
from cpnet.runtime.log import get_logger

from . import options as bounds
from .options import ReportOptions
from .pages import pack_labels, unpack_labels

log = get_logger("report")


def make_predictor(model, options: ReportOptions):
    """``predict(image_rgb) -> (label map, [ms of each model call])`` in the report's evaluation mode."""
    from cpnet.runtime.preprocess import postprocess, preprocess

    if options.eval_mode == "deploy":
        def predict(image):
            x = preprocess(image, model.manifest)
            t0 = time.perf_counter()
            logits = model.infer(x)
            ms = (time.perf_counter() - t0) * 1000
            return postprocess(logits, image.shape[:2]), [ms]

        return predict

    from cpnet.inference import predict_image

    h, w = model.input_size
    times: list[float] = []
    config = model.manifest.get("config") or {}
    overlap = float((config.get("eval") or {}).get("slide_overlap", 1 / 3))
    base_scale = None  # slide mode's base: the data's base scale, as cpnet evaluate (the image's own size without)
    if config.get("data"):
        from cpnet.config import from_dict
        from cpnet.data.transforms import base_scale_of

        try:
            base_scale = base_scale_of(from_dict({"data": config["data"]}).data, (h, w))
        except Exception:  # noqa: BLE001 - a hand-made manifest: fall back to the image's own size
            base_scale = None
    mean, std = model.manifest.get("mean", (0.0, 0.0, 0.0)), model.manifest.get("std", (1.0, 1.0, 1.0))

    def timed(batch):
        t0 = time.perf_counter()
        out = model(batch)
        times.append((time.perf_counter() - t0) * 1000)
        return out

    def predict(image):
        # as cpnet evaluate: each scale resized from the uint8 image and normalised as the manifest says
        probs = predict_image(image, timed, (h, w), model.num_classes, mean, std, mode=options.eval_mode,
                              scales=options.scales, flip=options.flip, overlap=overlap, base_scale=base_scale)
        label = probs.argmax(1)[0].numpy()
        out = list(times)
        times.clear()
        return label.astype(np.uint8 if model.num_classes <= 256 else np.int32), out

    return predict


@dataclass
class Pass:
    """What one artifact's pass over the images leaves: counts, agreement, latencies, worst images."""

    indices: list[int]  # the dataset's images this pass used, in order
    counts: np.ndarray  # (N, 3, C): true positives, ground-truth pixels, predicted pixels per class and image
    matrix: np.ndarray  # (C, C) confusion matrix, rows ground truth
    same: np.ndarray  # (N,) pixels equal to the reference's prediction
    pixels: np.ndarray  # (N,) pixels per image
    latencies_ms: list[float]  # per image: the model calls' wall time summed
    worst: list = field(default_factory=list)  # [(disagreement, index in indices, packed prediction)]
    seconds: float = 0.0


def run_pass(model, name: str, dataset, indices: list[int], options: ReportOptions, reference_preds: list | None,
             progress: bool, keep_predictions: bool = False, limit: int | None = None,
             skipped: list | None = None) -> tuple[Pass, list]:
    """One pass of ``model`` over ``indices``; with ``reference_preds`` also agreement and worst images.

    With ``skipped`` (a list; the reference's pass) a bad sample is logged, named
    in ``skipped`` and passed over, and the pass stops after ``limit`` usable
    images; ``Pass.indices`` says which were used, for the variants' passes.
    Returns the pass and, with ``keep_predictions``, every prediction packed.
    """
    from cpnet.data import BadSampleError
    from cpnet.runtime.metrics import ConfusionMatrix
    from cpnet.runtime.progress import progress as progress_bar

    C = len(dataset.classes)
    predict = make_predictor(model, options)
    total = ConfusionMatrix(C, dataset.ignore_index)
    used, counts, same, pixels, latencies, worst, kept = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    expected = len(indices) if limit is None else min(limit, len(indices))
    bar = progress_bar(total=expected, desc=name, unit="img", disable=not progress, file=sys.stderr)
    for i in indices:
        if limit is not None and len(used) >= limit:
            break
        try:
            image, label = dataset.load(i)
        except BadSampleError as e:
            if skipped is None:
                raise
            log.warning("skipping bad sample: %s", e)
            skipped.append(str(e))
            continue
        need = C * label.size * 4 * 2  # the logits and the probabilities at the image's size, float32
        if need > bounds.MAX_IMAGE_BYTES:
            raise UserError(f"{dataset.sample_path(i)}: a {label.shape[1]}x{label.shape[0]} image needs about "
                            f"{need / 2**30:.1f} GiB for its {C}-class scores at full size (the report compares at "
                            f"the image's size; at most {bounds.MAX_IMAGE_BYTES / 2**30:.0f} GiB); resize such images first")
        k = len(used)
        if k == 0:
            for _ in range(options.warmup):
                predict(image)
        pred, ms = predict(image)
        latencies.append(sum(ms))  # one call per image in deploy mode; every window, scale and flip otherwise
        if pred.shape != label.shape:
            raise RuntimeError(f"prediction of {pred.shape[1]}x{pred.shape[0]} for a label of "
                               f"{label.shape[1]}x{label.shape[0]} ({dataset.sample_path(i)})")
        one = ConfusionMatrix(C, dataset.ignore_index)
        one.update(pred, label)
        total.mat += one.mat
        counts.append(one.counts())
        pixels.append(pred.size)
        used.append(i)
        if keep_predictions:
            kept.append(pack_labels(pred))
        if reference_preds is not None:
            differ = pred != unpack_labels(reference_preds[k])
            same.append(pred.size - int(differ.sum()))
            if options.worst > 0:
                item = (float(differ.mean()), -k, k, None)
                if len(worst) < options.worst or item > worst[0]:
                    item = item[:3] + (pack_labels(pred),)
                    (heapq.heappush if len(worst) < options.worst else heapq.heapreplace)(worst, item)
        else:
            same.append(pred.size)
        bar.update()
    bar.close()
    if not used:
        raise UserError(f"no usable labelled image ({len(skipped or [])} bad sample(s)); check --data / --split")
    if int(total.mat.sum()) == 0:
        raise UserError(f"no labelled pixel in {len(used)} image(s): every mask pixel is the ignore label "
                        f"({dataset.ignore_index}) or out of range, so mIoU is undefined; check the masks")
    result = Pass(indices=used, counts=np.asarray(counts, np.int64).reshape(len(used), 3, C),
                  matrix=total.mat.copy(), same=np.asarray(same, np.int64), pixels=np.asarray(pixels, np.int64),
                  latencies_ms=latencies, worst=[(d, k, p) for d, _, k, p in sorted(worst, reverse=True)],
                  seconds=time.perf_counter() - t0)
    return result, kept
