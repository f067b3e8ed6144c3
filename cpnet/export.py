"""Export a checkpoint to ONNX (FP32), checked against PyTorch on real validation images.

    python -m cpnet.export runs/quickstart                       # -> runs/quickstart/export/model.onnx
    python -m cpnet.export runs/ade/best.pt -o ade.onnx --data-root data/ade/ADEChallengeData2016

The graph is :class:`cpnet.deploy.DeployCPNet` (BN folded, 1/N folded, one
N x N matmul, no auxiliary head, no prior output unless --with-prior), exported with PyTorch's
TorchScript exporter at a fixed input (1, 3, H, W) named ``image`` to logits
(1, C, H, W) named ``logits``, (H, W) = 8 x the prior grid (h, w). The graph is slimmed
with onnxslim when that shrinks it without changing its outputs.

Before the file is moved into place, validation images (whole image resized
to H x W and normalised by :mod:`cpnet.runtime.preprocess`, as at inference) are run
through the eval-mode PyTorch model and through ONNX Runtime; the export fails
(exit 1, nothing written) when the largest logit difference exceeds --atol or
more than --max-disagreement percent of pixels change class. ``--parity random`` checks on
random inputs instead, where no dataset is at hand, and the manifest says so.

The manifest ``model.onnx.json`` beside the file carries what the next stages
need: input size, normalisation, classes, palette, precision, lineage.

``--with-prior`` (cpnet head) adds the context prior map as a second output
``prior`` (1, N, N), N = the prior grid's h*w: row i is pixel i of the grid
(row-major) and holds the sigmoid prior probabilities that pixel i shares its
class with each pixel j, as the eval-mode model's head computes them (before
the 1/N that ``--inverse-n prior`` applies). ``cpnet demo --show-prior`` draws
its rows. The logits are the same graph's; the manifest's ``prior`` entry
names the output and its grid, and the parity check covers both outputs.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .checkpoint import load_model
from .config import Config
from .runtime import SCHEMA, CheckFailed, UserError, sha256_file, versions, write_manifest
from .runtime.files import artifact_sha256, check_output, scratch_dir
from .runtime.graph import name_nodes
from .runtime.log import get_logger
from .runtime.options import RuntimeOptions

DEFAULT_OPSET = 17
#: Opsets cpnet exports at: 13 (per-channel Q/DQ, which cpnet int8 needs) to the TorchScript exporter's last (20).
OPSETS = (13, 20)
log = get_logger("export")
TWO_GB = 2 * 1024 ** 3


class ParityError(CheckFailed):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerances (exit status 1)."""


def default_output(ckpt_arg: "str | Path", ckpt_path: "str | Path") -> Path:
    """RUN_DIR/export/model.onnx for a run directory; <checkpoint stem>.onnx beside a checkpoint file."""
    arg = Path(ckpt_arg)
    if arg.is_dir():
        return arg / "export" / "model.onnx"
    ckpt_path = Path(ckpt_path)
    return ckpt_path.with_name(ckpt_path.stem + ".onnx")


def _classes_and_palette(ckpt: dict, cfg: Config) -> tuple[list[str], list[list[int]]]:
    classes, palette = ckpt.get("classes"), ckpt.get("palette")
    if not classes:
        try:
            from .data import classes_of

            classes, palette = classes_of(cfg.data)
        except Exception:  # noqa: BLE001 - the names are a convenience; fall back to numbers
            classes = [f"class_{i}" for i in range(cfg.model.num_classes)]
    if not palette or len(palette) != len(classes):
        from .data.base import default_palette

        palette = default_palette(len(classes))
    if len(classes) != cfg.model.num_classes:
        raise UserError(f"the checkpoint lists {len(classes)} classes but its model has {cfg.model.num_classes} outputs")
    return [str(c) for c in classes], [[int(v) for v in c] for c in palette]


def _input_size(cfg: Config, input_size: "Sequence[int] | int | None") -> tuple[int, int]:
    s = tuple(cfg.crop_size)
    if input_size is None:
        return s
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) == 1:
        input_size = (input_size[0], input_size[0])
    h, w = (int(v) for v in input_size)
    if cfg.model.head == "cpnet" and (h, w) != s:
        ph, pw = cfg.model.prior_size
        raise UserError(f"--input-size {h} {w}: this model's prior grid is {ph}x{pw}, "
                        f"so its input must be {s[0]} {s[1]} (8 x the prior grid)")
    if h < 8 or w < 8:
        raise UserError(f"--input-size {h} {w}: the input must be at least 8x8")
    return h, w


def _torch_export(deploy: torch.nn.Module, path: Path, size: tuple[int, int], opset: int) -> None:
    dummy = torch.zeros(1, 3, *size)
    outputs = ["logits", "prior"] if getattr(deploy, "with_prior", False) else ["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer chatter
        with torch.no_grad():
            torch.onnx.export(deploy, (dummy,), str(path), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=outputs, do_constant_folding=True,
                              export_params=True)


def _ort_run(model_or_path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    from .runtime.ort import make_session

    sess = make_session(model_or_path, threads=threads)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _simplify(model, size: tuple[int, int], threads: int | None = None):
    """(model, simplified, note): onnxslim's graph when it is smaller and gives the same outputs, else the input."""
    try:
        import onnxslim
    except ImportError:
        return model, False, "onnxslim not installed"
    before = len(model.graph.node)
    try:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
        if slim is None:
            raise RuntimeError("onnxslim returned nothing")
    except Exception as e:  # noqa: BLE001 - slimming is an optimisation; keep the exported graph
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        note = f"onnxslim failed ({why}); kept the unsimplified graph"
        log.warning(f"{note}")
        return model, False, note
    after = len(slim.graph.node)
    if after >= before:
        return model, False, f"onnxslim found nothing to remove ({before} nodes)"
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    try:
        a, b = _ort_run(model, x, threads), _ort_run(slim, x, threads)
        diff = float(np.abs(a - b).max())
        ok = a.shape == b.shape and diff <= 1e-5 * max(1.0, float(np.abs(a).max()))
    except Exception as e:  # noqa: BLE001
        ok, diff = False, float("nan")
        log.warning(f"the slimmed graph does not run ({str(e).strip().splitlines()[0][:160]})")
    if not ok:
        note = f"onnxslim changed the outputs (max abs diff {diff:.3g}); kept the unsimplified graph"
        log.warning(f"{note}")
        return model, False, note
    return slim, True, f"onnxslim: {before} -> {after} nodes"


def _save_onnx(model, path: Path) -> None:
    import onnx

    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size < TWO_GB - (64 << 20):
        onnx.save_model(model, str(path))
    else:  # protobuf cannot hold more than 2 GB: weights go to one side file
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")


def parity_inputs(cfg: Config, manifest: dict, num_images: int, data_root: str | None, split: str | None,
                  source: str = "data"):
    """(list of (1, 3, H, W) float32 inputs, description) for the parity check."""
    from .runtime.preprocess import preprocess

    if source == "random":
        rng = np.random.default_rng(0)
        h, w = manifest["input_size"]
        return [rng.standard_normal((1, 3, h, w)).astype(np.float32) for _ in range(num_images)], "random"
    from .data import BadSampleError, build_dataset

    if data_root:
        cfg.data.root = str(data_root)
    split = split or cfg.data.val_split
    try:
        ds = build_dataset(cfg.data, split, cfg.crop_size, train=False, num_classes=cfg.model.num_classes)
    except UserError as e:
        raise UserError(f"the parity check needs {split} images: {e}; pass --data-root DIR, "
                        f"or --parity random to check on random inputs") from None
    if len(ds) == 0:
        raise UserError(f"the parity check needs images, but the {split} split at {cfg.data.root} is empty; "
                        f"pass --data-root DIR, or --parity random")
    idx = sorted(set(np.linspace(0, len(ds) - 1, min(num_images, len(ds))).round().astype(int).tolist()))
    inputs = []
    for i in idx:
        try:
            image, _ = ds.load(i)
        except BadSampleError:
            continue
        inputs.append(preprocess(image, manifest))
    if not inputs:
        raise UserError(f"no readable image among the {len(idx)} {split} images tried at {cfg.data.root}")
    return inputs, f"{split} split of {cfg.data.root}"


def check_parity(model: torch.nn.Module, onnx_path: Path, inputs, atol: float, min_agreement: float,
                 threads: int | None = None, with_prior: bool = False) -> dict:
    """Run ``inputs`` through the eval-mode torch model and ONNX Runtime; the numbers for the manifest.

    With ``with_prior`` the file's second output is compared with the eval-mode head's P too
    (``prior_max_abs``, held to the same ``atol``).
    """
    from .runtime.compare import Comparison
    from .runtime.ort import make_session

    sess = make_session(onnx_path, threads=threads)
    name = sess.get_inputs()[0].name
    result = Comparison()
    prior_max_abs = 0.0
    model.eval()
    with torch.no_grad():
        for x in inputs:
            t = torch.from_numpy(x)
            ref = model(t).float().numpy()
            outs = sess.run(None, {name: x})
            out = outs[0].astype(np.float32)
            if out.shape != ref.shape:
                raise ParityError(f"{onnx_path.name}: ONNX output shape {out.shape} != PyTorch {ref.shape}")
            result.update(out, ref)
            if with_prior:
                _, _, p_ref = model.forward_head(model.forward_features(t)[1])
                p_out = outs[1].astype(np.float32)
                if p_out.shape != tuple(p_ref.shape):
                    raise ParityError(f"{onnx_path.name}: ONNX prior shape {p_out.shape} != PyTorch {tuple(p_ref.shape)}")
                prior_max_abs = max(prior_max_abs, float(np.abs(p_out - p_ref.float().numpy()).max()))
    stats = {**result.metrics(), "atol": float(atol), "min_agreement": float(min_agreement)}
    if with_prior:
        stats["prior_max_abs"] = prior_max_abs
    return stats


@dataclass(frozen=True)
class ExportOptions:
    """How to export: ``opset``; ``input_size`` (H, W) (default 8 x the prior grid); the parity check's
    images (``parity`` "data" from ``split`` of the dataset at ``data_root``, or "random") and limits
    (``atol`` in logit units, ``max_disagreement`` in percent of pixels); ``simplify`` with onnxslim;
    ``inverse_n`` "prior" or "conv" (where the context's 1/N goes); ``with_prior``: the prior map P as a
    second output ``prior`` (cpnet head only)."""

    opset: int = DEFAULT_OPSET
    input_size: "Sequence[int] | int | None" = None
    data_root: str | None = None
    split: str | None = None
    parity: str = "data"
    num_parity_images: int = 8
    atol: float = 1e-3
    max_disagreement: float = 0.1
    simplify: bool = True
    inverse_n: str = "prior"
    with_prior: bool = False


def onnx_manifest(cfg: Config, ckpt: dict, size: tuple[int, int], classes, palette, opset: int,
                  with_prior: bool) -> dict:
    """The ONNX file's manifest before export (docs/architecture.md section 2): what the next stages read, and
    the checkpoint it came from; export adds its sha256, the export record and the versions."""
    c = cfg.model.num_classes
    manifest = {
        "kind": "onnx",
        "model": cfg.name,
        "config": cfg.to_dict(),
        "classes": classes,
        "palette": palette,
        "input_size": list(size),
        "mean": [float(v) for v in cfg.data.mean],
        "std": [float(v) for v in cfg.data.std],
        "channel_order": "RGB",
        "input": {"name": "image", "shape": [1, 3, *size], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, c, *size], "dtype": "float32", "layout": "NCHW"},
        "precision": "fp32",
        "opset": int(opset),
        "parent": {"path": str(ckpt["path"]), "sha256": ckpt.get("sha256") or sha256_file(ckpt["path"])},
    }
    if with_prior:
        n = cfg.model.prior_cells
        manifest["prior"] = {"output": "prior", "shape": [1, n, n], "dtype": "float32", "grid": list(cfg.model.prior_size),
                             "rows": "row i = pixel i of the prior grid (row-major); P[0, i, j] = sigmoid prior "
                                     "that pixels i and j share a class"}
    return manifest


def parity_gate(stats: dict, source: str, atol: float, max_disagreement: float, out: Path) -> None:
    """Refuse the export (:class:`ParityError`, nothing written) when ONNX Runtime and PyTorch part: a logit (or
    prior) difference over ``atol``, or more than ``max_disagreement`` percent of pixels changing class."""
    stats["source"] = source
    if stats.get("prior_max_abs", 0.0) > atol:
        raise ParityError(f"parity check failed on {stats['images']} image(s) ({source}): max |prior diff| "
                          f"{stats['prior_max_abs']:.3g} (atol {atol:g}); {out} not written")
    if stats["max_abs"] > atol or stats["agreement"] < 1.0 - max_disagreement / 100.0:
        raise ParityError(
            f"parity check failed on {stats['images']} image(s) ({source}): max |logit diff| "
            f"{stats['max_abs']:.3g} (atol {atol:g}), argmax agreement {stats['agreement']:.5f} "
            f"(at most {max_disagreement:g}% of pixels may change); {out} not written")


def _make_graph(deploy, tmp_dir: Path, name: str, size, opset: int, simplify: bool, threads):
    """Export ``deploy`` to ONNX in ``tmp_dir``, check, simplify (on request) and name its nodes; save it as
    ``tmp_dir/name``. (graph, staged path, nodes before simplifying, simplified?, simplifier note)."""
    import onnx

    raw = tmp_dir / "raw.onnx"
    try:
        _torch_export(deploy, raw, size, opset)
        onnx_model = onnx.load(str(raw))
        onnx.checker.check_model(onnx_model)
    except Exception as e:  # noqa: BLE001 - exporter errors are long; one line is enough here
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"ONNX export failed at opset {opset} ({first})") from None
    nodes_raw = len(onnx_model.graph.node)
    simplified, note = False, "disabled (--no-simplify)"
    if simplify:
        onnx_model, simplified, note = _simplify(onnx_model, size, threads)
    name_nodes(onnx_model)
    onnx_model.producer_name = "cpnet.export"
    staged = tmp_dir / name
    _save_onnx(onnx_model, staged)
    return onnx_model, staged, nodes_raw, simplified, note


def export_checkpoint(ckpt_path: "str | Path", out_path: "str | Path | None" = None,
                      options: ExportOptions = ExportOptions(), runtime: RuntimeOptions = RuntimeOptions(),
                      **overrides) -> tuple[Path, dict]:
    """Export a checkpoint (file or run directory) to ONNX; return (path, manifest).

    ``threads``: ONNX Runtime intra-op threads for the checks (default: ORT's choice).
    ``inverse_n``: where the deploy graph applies the context's 1/N (see :class:`cpnet.deploy.DeployCPNet`):
    ``"conv"`` folds it into the 1x1 convs; ``"prior"`` scales P before the matmul, keeping the
    matmul's output in FP16 range for large prior grids.
    Raises :class:`ParityError` when ONNX Runtime disagrees with PyTorch (nothing
    is written then) and :class:`UserError` for anything else the user can fix.
    """
    from .deploy import DeployCPNet

    o = replace(options, **overrides) if overrides else options
    opset, input_size, data_root, split, parity = o.opset, o.input_size, o.data_root, o.split, o.parity
    num_parity_images, atol, simplify, inverse_n, threads = (o.num_parity_images, o.atol, o.simplify, o.inverse_n,
                                                              runtime.threads)
    min_agreement = 1.0 - o.max_disagreement / 100.0
    if parity not in ("data", "random"):
        raise UserError(f"--parity must be 'data' or 'random', got {parity!r}")
    if num_parity_images < 1:
        raise UserError("--num-parity-images must be at least 1")
    t0 = time.perf_counter()
    model, cfg, ckpt = load_model(ckpt_path)
    if data_root:  # recorded in the manifest's config, so later stages (calibration) find the data too
        cfg.data.root = str(data_root)
    out = Path(out_path) if out_path else default_output(ckpt_path, ckpt["path"])
    if out.suffix != ".onnx":
        raise UserError(f"{out}: the output must be a .onnx file")
    check_output(out, what="ONNX output")
    size = _input_size(cfg, input_size)
    classes, palette = _classes_and_palette(ckpt, cfg)

    if inverse_n not in ("conv", "prior"):
        raise UserError(f"--inverse-n must be 'conv' or 'prior', got {inverse_n!r}")
    if o.with_prior and cfg.model.head != "cpnet":
        raise UserError(f"--with-prior: this model's head is {cfg.model.head!r}, which has no context prior "
                        f"(only the cpnet head has one)")
    deploy = DeployCPNet(model, input_size=size, inverse_n=inverse_n, with_prior=o.with_prior)
    manifest = onnx_manifest(cfg, ckpt, size, classes, palette, opset, o.with_prior)
    # Parity inputs first: a missing dataset should fail before minutes of export work.
    inputs, source = parity_inputs(cfg, manifest, num_parity_images, None, split, parity)

    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.name, near=out) as tmp_dir:
        onnx_model, staged, nodes_raw, simplified, note = _make_graph(deploy, Path(tmp_dir), out.name, size, opset,
                                                                     simplify, threads)

        stats = check_parity(model, staged, inputs, atol, min_agreement, threads, with_prior=o.with_prior)
        parity_gate(stats, source, atol, o.max_disagreement, out)
        manifest["sha256"] = artifact_sha256(staged)
        manifest["export"] = {
            "rewrites": list(deploy.rewrites),
            "simplified": simplified,
            "simplify_note": note,
            "nodes": {"exported": nodes_raw, "final": len(onnx_model.graph.node)},
            "exporter": f"torch.onnx.export(dynamo=False) TorchScript exporter, torch {torch.__version__}",
            "parity": stats,
        }
        manifest["versions"] = versions()
        os.replace(staged, out)
        side = staged.with_name(staged.name + ".data")
        if side.exists():
            os.replace(side, out.with_name(out.name + ".data"))
    write_manifest(out, manifest)
    mb = out.stat().st_size / 2 ** 20
    log.info(f"wrote {out} ({mb:.1f} MiB, {len(onnx_model.graph.node)} nodes, opset {opset}; rewrites: {', '.join(deploy.rewrites)}; "
        f"{note})")
    log.info(f"parity on {stats['images']} image(s) ({source}): max |logit diff| {stats['max_abs']:.2e}, "
        f"argmax agreement {100 * stats['agreement']:.3f}% [{time.perf_counter() - t0:.1f} s]")
    return out, {"schema": SCHEMA, **manifest}


DESCRIPTION = """Export a checkpoint to ONNX (FP32), checked against PyTorch on validation images.

The ONNX file is written only when ONNX Runtime agrees with PyTorch within --atol and
--max-disagreement (exit 1 otherwise, nothing written); its manifest beside it carries
input size, normalisation, classes and lineage for the next stages."""

EXAMPLES = """cpnet export runs/quickstart                  # -> runs/quickstart/export/model.onnx
cpnet export runs/ade/best.pt -o ade.onnx --data-root data/ade/ADEChallengeData2016
cpnet export runs/quickstart --parity random  # no dataset at hand
cpnet export runs/quickstart --with-prior -o prior.onnx  # + the prior map P, for cpnet demo --show-prior"""


def add_arguments(p) -> None:
    from .cli import args as cli_args

    cli_args.add_input(p, "CHECKPOINT|RUN_DIR", "a checkpoint (.pt) or a run directory (its best.pt)")
    cli_args.add_output(p, "output .onnx (default: RUN_DIR/export/model.onnx, or <checkpoint>.onnx beside a checkpoint file)")
    d = ExportOptions()
    p.add_argument("--opset", type=cli_args.int_in(*OPSETS), default=d.opset,
                   help=f"ONNX opset, {OPSETS[0]} to {OPSETS[1]} (default {d.opset})")
    p.add_argument("--input-size", type=cli_args.positive_int, nargs="+", metavar=("H", "W"),
                   help="model input (default: 8 x the prior grid from the config; the cpnet head accepts no other)")
    g = p.add_argument_group("parity check")
    cli_args.add_data_root(g, "for the parity images (default: the config's data.root)")
    g.add_argument("--split", help="split for the parity images (default: the config's val split)")
    g.add_argument("--parity", choices=["data", "random"], default=d.parity,
                   help="check on validation images (default) or on random inputs")
    g.add_argument("--num-parity-images", type=cli_args.positive_int, default=d.num_parity_images, metavar="N",
                   help=f"images for the parity check (default {d.num_parity_images})")
    g.add_argument("--atol", type=cli_args.non_negative_float, default=d.atol,
                   help=f"largest |logit difference| allowed, in logit units (default {d.atol:g})")
    cli_args.add_max_disagreement(g, d.max_disagreement)
    p.add_argument("--no-simplify", action="store_true", help="keep the exporter's graph (no onnxslim)")
    p.add_argument("--inverse-n", choices=["conv", "prior"], default=d.inverse_n,
                   help="where the context's 1/N goes: applied to the prior map before the matmul (default; keeps "
                        "the matmul in FP16 range for large prior grids), or folded into the 1x1 convs")
    p.add_argument("--with-prior", action="store_true",
                   help="also output the context prior map P as 'prior' (1, N, N), for cpnet demo --show-prior "
                        "(cpnet head only)")
    cli_args.add_json(p, "the manifest of the exported file")
    cli_args.add_runtime(p)


def run(args) -> int:
    from .cli.args import runtime_options
    from .runtime import atomic_write_json

    if args.input_size is not None and len(args.input_size) > 2:
        raise UserError("--input-size takes H W (or one number for a square input)")
    for path in (args.output, args.json):
        if path:
            check_output(path)
    options = ExportOptions(opset=args.opset, input_size=args.input_size, data_root=args.data_root, split=args.split,
                            parity=args.parity, num_parity_images=args.num_parity_images, atol=args.atol,
                            max_disagreement=args.max_disagreement, simplify=not args.no_simplify,
                            inverse_n=args.inverse_n, with_prior=args.with_prior)
    path, manifest = export_checkpoint(args.input, args.output, options, runtime_options(args))
    print(path)
    if args.json:
        atomic_write_json(args.json, manifest)
    return 0


def main(argv=None) -> int:
    from .cli import run_verb

    return run_verb(__name__, argv)


if __name__ == "__main__":
    sys.exit(main())
