"""Convert a checkpoint trained with the authors' code or mmsegmentation into a cpnet run directory.

    cpnet convert cpnet_r50-d8_ade20k.pth --config ade20k_r50 -o runs/ade_authors
    cpnet evaluate runs/ade_authors --data-root data/ade/ADEChallengeData2016

The authors' CPNet (``decode_head/cp_head.py`` of yu-changqian/ContextPrior) is an mmseg
``EncoderDecoder``: ``backbone.*`` (ResNetV1c, the same names as cpnet's backbone),
``decode_head.*`` (``CPHead``) and ``auxiliary_head.*`` (``FCNHead``). Its head's
modules are renamed onto cpnet's (:data:`RENAMES`): ``aggregation.reduce_conv`` ->
``aggregation.reduce``, ``t1``/``t2``/``p1``/``p2`` (``.conv``) -> ``path1_a``/``path1_b``/
``path2_a``/``path2_b``, ``prior_conv.conv``/``prior_conv.bn`` -> ``prior_conv``/``prior_bn``,
``conv_seg`` -> ``classifier``, ``auxiliary_head.convs.0`` -> ``aux_head.conv``,
``auxiliary_head.conv_seg`` -> ``aux_head.classifier``; everything else keeps its name.
The file may be the state dict itself or a dict holding it under ``state_dict`` (mmcv /
mmengine) with ``meta``; class names and palette come from ``meta`` where present
(mmseg 0.x ``CLASSES``/``PALETTE``, 1.x ``dataset_meta``), else from the config's dataset.

The model is built from ``--config`` (and ``key.sub=value`` overrides): its depth,
widths, prior grid and class count must match the file's tensors. Every tensor must find
its place and every place a tensor: missing, unexpected and mis-shaped keys are reported
together in one message (nothing is written). A file without ``auxiliary_head.*`` gives a
model without the auxiliary head; one without the aggregation's depthwise biases a model
without them (``model.agg_bias=false``).

Reading is safe: ``torch.load(weights_only=True)``, which executes nothing from the file.
mmseg 1.x (mmengine) files also keep mmengine objects (``HistoryBuffer`` in
``message_hub``) and NumPy arrays in their metadata, which ``weights_only`` refuses. They
are read through a **minimal allowlist** (:data:`INERT_GLOBALS`): the names mmengine and
NumPy pickle such objects under are mapped to :class:`Inert`, a placeholder that records
the arguments and state it is given and runs nothing (no mmengine or NumPy code is
called). A file that needs any other Python object is refused in one line that says how
to strip it to its weights. Full unpickling is never done.

ResNet-18/34 checkpoints are refused: mmseg's ``BasicBlock`` does not dilate its second
3x3 conv, cpnet's does, so the converted model would not be the same function.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from .config import Config, hw_text, load_config
from .runtime import UserError
from .runtime.log import get_logger

log = get_logger("convert")

#: (prefix in the authors' / mmseg's naming, prefix in cpnet's), first match wins.
RENAMES = (
    ("decode_head.aggregation.reduce_conv.", "decode_head.aggregation.reduce."),
    ("decode_head.aggregation.t1.conv.", "decode_head.aggregation.path1_a."),
    ("decode_head.aggregation.t2.conv.", "decode_head.aggregation.path1_b."),
    ("decode_head.aggregation.p1.conv.", "decode_head.aggregation.path2_a."),
    ("decode_head.aggregation.p2.conv.", "decode_head.aggregation.path2_b."),
    ("decode_head.prior_conv.conv.", "decode_head.prior_conv."),
    ("decode_head.prior_conv.bn.", "decode_head.prior_bn."),
    ("decode_head.conv_seg.", "decode_head.classifier."),
    ("auxiliary_head.convs.0.", "aux_head.conv."),
    ("auxiliary_head.conv_seg.", "aux_head.classifier."),
)
#: tensors some mmseg versions keep that are not weights (the data preprocessor's mean/std)
IGNORED_PREFIXES = ("data_preprocessor.",)
#: the globals mmseg 1.x / mmengine checkpoints pickle in their metadata, read as :class:`Inert` placeholders
INERT_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "mmengine.logging.message_hub.MessageHub",
    "mmengine.config.config.ConfigDict",
    "mmengine.structures.base_data_element.BaseDataElement",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
)
_INERT_DTYPE_MODULE = "numpy.dtypes."  # NumPy 1.25+ pickles dtypes by class (numpy.dtypes.Float64DType, ...)


class Inert:
    """A stand-in for an object in a checkpoint's metadata: it keeps what the unpickler hands it and runs nothing.

    Constructed (``NEWOBJ``) or called (``REDUCE``) with the pickled arguments, given state by ``BUILD``; it
    has no behaviour, so reading it cannot execute code from the file."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return "Inert(...)"


def _allowed(name: str) -> bool:
    return name in INERT_GLOBALS or (name.startswith(_INERT_DTYPE_MODULE) and name.endswith("DType"))


def strip_hint(path: Path) -> str:
    # Never advise full unpickling here: the weights are re-saved by the code that made the file.
    return (f"strip it to its weights where it was made (in the mmsegmentation environment that trained it, "
            f"torch.save({{'state_dict': model.state_dict(), 'meta': {{'CLASSES': classes}}}}, "
            f"'{path.stem}.weights.pth') with plain tensors and strings only), or ask its author for a weights-only "
            f"file, and convert that")


def read_file(path: "str | Path") -> tuple[Any, str | None]:
    """(the unpickled object, a note on inert placeholders or None), read without executing anything."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError as e:
        text = str(e)
    except Exception as e:  # noqa: BLE001 - not a zip / truncated / not a torch file
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))  # a stable order for the log
    except Exception:  # noqa: BLE001 - an older (non-zip) format: nothing more can be said safely
        names = []
    refused = [n for n in names if not _allowed(n)]
    if not names or refused:
        what = ", ".join((refused or names)[:3]) or (text.strip().splitlines() or ["weights_only refused it"])[0][:120]
        raise UserError(f"{path}: holds Python objects that safe loading (weights_only=True) refuses and cpnet does "
                        f"not read ({what}); {strip_hint(path)}")
    with torch.serialization.safe_globals([(Inert, n) for n in names]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: its metadata could not be read as inert data ({msg}); {strip_hint(path)}") from None
    return obj, f"read {len(names)} kind(s) of mmengine/NumPy metadata object as inert placeholders ({', '.join(names)})"


def split_checkpoint(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta) of an mmcv/mmengine checkpoint (``state_dict`` + ``meta``), a cpnet one (``model``) or a
    bare state dict."""
    meta: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise UserError(f"{path}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    return sd, meta


def cpnet_key(key: str) -> str | None:
    """The cpnet name of a key in the authors' / mmseg's naming; None for a tensor that is not a weight."""
    while key.startswith("module."):  # DataParallel / DistributedDataParallel
        key = key[len("module."):]
    if key.startswith(IGNORED_PREFIXES):
        return None
    for theirs, ours in RENAMES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def classes_from_meta(meta: dict, num_classes: int) -> tuple[list[str] | None, list[list[int]] | None]:
    """Class names and palette from mmseg's metadata (1.x ``dataset_meta``, 0.x ``CLASSES``/``PALETTE``), when usable."""
    dm = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = dm.get("classes", meta.get("CLASSES"))
    palette = dm.get("palette", meta.get("PALETTE"))
    if not (isinstance(classes, (list, tuple)) and len(classes) == num_classes and all(isinstance(c, str) for c in classes)):
        classes = None
    else:  # readable: mmseg's ADE20K list has 'bed ' (trailing space); comparisons ignore it (class_key)
        classes = [" ".join(c.split()) for c in classes]
    ok = (isinstance(palette, (list, tuple)) and len(palette) == num_classes
          and all(isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) for v in c) for c in palette))
    return (list(classes) if classes else None), ([[int(v) for v in c] for c in palette] if ok else None)


def build_state(sd: dict[str, torch.Tensor], cfg: Config, path: Path):
    """(model, state dict in cpnet's naming, notes): the file's tensors placed into a CPNet of ``cfg``; every
    missing, unexpected and mis-shaped key in one UserError."""
    from .models import CPNet
    from .models.weights import first_items, state_dict_fit

    if cfg.model.head != "cpnet":
        raise UserError(f"--config: model.head={cfg.model.head!r}; the authors' checkpoints are CPNets (model.head=cpnet)")
    if cfg.model.depth in (18, 34):
        raise UserError(f"--config: model.depth={cfg.model.depth}: mmseg's ResNet-18/34 basic blocks do not dilate "
                        f"their second conv and cpnet's do, so the converted model would compute another function; "
                        f"only ResNet-50/101 checkpoints convert")
    mapped, origin = {}, {}
    for key, value in sd.items():
        new = cpnet_key(key)
        if new is not None:
            mapped[new], origin[new] = value, key
    notes = []
    if cfg.model.aux and not any(k.startswith("aux_head.") for k in mapped):
        cfg.model.aux = False
        notes.append("no auxiliary_head.* in the file: built without the auxiliary head")
    dw = [f"decode_head.aggregation.{p}.bias" for p in ("path1_a", "path1_b", "path2_a", "path2_b")]
    if cfg.model.agg_bias and not any(k in mapped for k in dw):
        cfg.model.agg_bias = False
        notes.append("no biases in the aggregation's depthwise convs: built without them (model.agg_bias=false)")
    model = CPNet(cfg.model)
    own = model.state_dict()
    missing, unexpected, mismatched = state_dict_fit(own, mapped, name=origin.__getitem__)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({first_items(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({first_items(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape, file vs model ({first_items(mismatched, 3)})")
        m = cfg.model
        raise UserError(f"{path}: does not fit --config {cfg.name} (R{m.depth}, base_width {m.base_width}, "
                        f"head_channels {m.head_channels}, prior {hw_text(m.prior_size)}, {m.num_classes} classes): "
                        f"{'; '.join(parts)}. Set the config (or key.sub=value overrides) to the model the file holds")
    model.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)
    return model, notes


def convert_checkpoint(src: "str | Path", config: str, out_dir: "str | Path", overrides=(), overwrite: bool = False,
                       data_root: str | None = None) -> tuple[Path, dict]:
    """Write ``out_dir/best.pt`` (+ manifest, + config.yaml) from an authors' / mmseg checkpoint; return (path, report)."""
    import yaml

    from .checkpoint import save_checkpoint
    from .runtime import atomic_write_text, sha256_file
    from .runtime.files import check_output

    src, out_dir = Path(src), Path(out_dir)
    check_output(out_dir, kind="dir", what="run directory")
    target = out_dir / "best.pt"
    if target.exists() and not overwrite:
        raise UserError(f"{target}: already exists; pass --overwrite to replace it, or choose another -o")
    overrides = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    cfg = load_config(config, overrides)
    obj, note = read_file(src)
    sd, meta = split_checkpoint(obj, src)
    model, notes = build_state(sd, cfg, src)
    if note:
        notes.insert(0, note)
    classes, palette = classes_from_meta(meta, cfg.model.num_classes)
    source = "the file's meta" if classes else None
    from .data import classes_of
    from .runtime.manifest import class_names_differ

    try:
        names, colours = classes_of(cfg.data)
    except UserError:  # a folder dataset that is not on this machine: the names are a convenience
        names, colours = [], []
    if classes is not None and len(names) == cfg.model.num_classes:
        differ = class_names_differ(classes, names)  # tolerant of mmseg's 'bed ' and of case
        if differ:
            notes.append(f"the file's class names are not the {cfg.data.dataset} dataset's ({differ}): was it "
                         f"trained on another dataset? check --config")
    if classes is None:
        if len(names) == cfg.model.num_classes:
            classes, source = list(names), f"the {cfg.data.dataset} dataset"
            palette = palette or [list(c) for c in colours]
        else:
            classes, source = [f"class_{i}" for i in range(cfg.model.num_classes)], "numbers (no names found)"
    if palette is None:
        from .data.base import default_palette

        palette = [list(c) for c in default_palette(len(classes))]
    it = meta.get("iter") if isinstance(meta.get("iter"), int) else 0
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "iter": it, "classes": classes, "palette": palette,
             "converted_from": {"path": str(src), "sha256": sha256_file(src)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, state, cfg, classes, palette)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    report = {"checkpoint": str(target), "source": str(src), "config": cfg.name, "tensors": len(sd),
              "loaded": sum(1 for k in model.state_dict() if not k.endswith("num_batches_tracked")),
              "missing": [], "unexpected": [], "classes_from": source, "notes": notes}
    return target, report


DESCRIPTION = """Convert a checkpoint trained with the authors' code or mmsegmentation into a cpnet run directory.

The file (an mmseg EncoderDecoder state dict, plain or under 'state_dict' with 'meta') is read
safely (weights_only; mmengine/NumPy metadata as inert placeholders), renamed onto cpnet's
modules and checked against --config: missing, unexpected and mis-shaped keys are one message.
The run directory then works with evaluate, export, quantization, engines and the demo."""

EXAMPLES = """cpnet convert cpnet_r50-d8_ade20k.pth --config ade20k_r50 -o runs/ade_authors
cpnet convert iter_80000.pth --config cityscapes_r101 -o runs/cs --data-root data/cityscapes
cpnet convert my.pth --config ade20k_r50 model.prior_size=64 -o runs/ade64   # key.sub=value overrides"""


def add_arguments(p) -> None:
    from .cli import args as cli_args

    cli_args.add_input(p, "CHECKPOINT", "a .pth file from the authors' code or mmsegmentation (EncoderDecoder naming)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. model.prior_size=64")
    p.add_argument("--config", required=True, metavar="NAME|YAML",
                   help="the model the file holds: a named config (ade20k_r50, ...) or a YAML file")
    cli_args.add_output(p, "run directory to write best.pt (+ manifest) and config.yaml into (default runs/<file stem>)")
    cli_args.add_data_root(p, "on this machine, kept in the config (data.root)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing best.pt in the run directory")
    cli_args.add_json(p, "the conversion report")


def run(args) -> int:
    from .runtime import atomic_write_json
    from .runtime.files import check_output

    if args.json:
        check_output(args.json)
    out = Path(args.output or Path("runs") / Path(args.input).stem)
    path, report = convert_checkpoint(args.input, args.config, out, args.overrides, args.overwrite, args.data_root)
    for line in report["notes"]:
        log.info(line)
    log.info(f"{report['loaded']} tensors placed, none missing or unexpected; classes from {report['classes_from']}")
    print(path)
    if args.json:
        atomic_write_json(args.json, report)
    return 0


def main(argv=None) -> int:
    from .cli import run_verb

    return run_verb(__name__, argv)


if __name__ == "__main__":
    sys.exit(main())
