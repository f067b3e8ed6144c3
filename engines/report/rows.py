"""What the report measures: the variants of a run, the labelled images, and one row per variant x backend
x option set that applies on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cpnet.runtime import UserError

from .options import ARTIFACT_SUFFIXES, PRECISION_ORDER, ReportOptions

if TYPE_CHECKING:
    from engines.backends.row_key import RowKey


def find_variants(run_dir: "str | Path") -> list[Path]:
    """The exported files of a run (``RUN/export/*.onnx``, engines), FP32 first, each with its manifest."""
    from cpnet.runtime import read_manifest

    export = Path(run_dir) / "export"
    found = []
    for p in sorted(export.glob("*")) if export.is_dir() else []:
        if p.suffix.lower() in ARTIFACT_SUFFIXES and p.is_file() and p.with_name(p.name + ".json").is_file():
            man = read_manifest(p, required=False) or {}
            found.append((p.suffix.lower() != ".onnx", PRECISION_ORDER.get(str(man.get("precision")), 9),
                          str(man.get("flavour") or ""), p.name, p))
    if not found:
        raise UserError(f"{export}: no exported files (ONNX files or engines with their manifests); run cpnet export "
                        f"{run_dir} (and cpnet fp16|int8) first, or name the variants after the reference")
    return [item[-1] for item in sorted(found)]


def open_dataset(options: ReportOptions, manifest: dict):
    """The labelled images: a folder-format dataset, a config's dataset, or the reference manifest's config's."""
    from cpnet.config import ConfigError, from_dict, load_config, named_configs
    from cpnet.data import FolderDataset, build_dataset

    source = options.data
    if source and Path(source).expanduser().is_dir():
        root = Path(source).expanduser()
        split = options.split or "val"
        if not (root / "images" / split).is_dir():
            raise UserError(f"{root}: not a labelled dataset folder (expected images/{split}/, masks/{split}/ and "
                            f"classes.yaml); the report needs ground truth, or pass a config name")
        return FolderDataset(root, split), f"{split} split of {root}"
    try:
        if source:
            if source not in named_configs() and Path(source).suffix.lower() not in (".yaml", ".yml"):
                raise UserError(f"--data {source}: no such folder, and not a named config or YAML file")
            cfg = load_config(source)
        else:
            config = manifest.get("config")
            if not config:
                raise UserError("the reference's manifest records no config; pass --data DIR (a dataset folder) "
                                "or a config name")
            cfg = from_dict(config)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if options.data_root:
        cfg.data.root = str(options.data_root)
    split = options.split or cfg.data.val_split
    ds = build_dataset(cfg.data, split, cfg.crop_size, train=False)
    return ds, f"{split} split of {cfg.data.dataset} at {cfg.data.root}"


def open_options(backend: str, runtime) -> dict:
    """engines.open options for a backend from the runtime flags."""
    if backend == "torch":
        return {"device": runtime.device, "threads": runtime.threads}
    if backend == "onnxruntime":
        return {"providers": list(runtime.providers) or None, "threads": runtime.threads}
    if backend == "tensorrt":
        return runtime.engine_options()
    if backend == "openvino":
        return {"threads": runtime.threads}
    return {}


def variant_rows(paths: list[Path], names: list[str], options: ReportOptions) -> list[tuple[Path, "RowKey"]]:
    """(path, row key) of every row to measure: each variant on each backend that runs it (``options.backends``,
    or every installed one), with each option set that applies on this machine (or ``options.backend_options``).
    A backend that cannot run a variant's kind of file gives no row; one that is asked for and not installed
    gives a row that is reported as not run."""
    from cpnet.runtime.options import parse_backend_options
    from engines.backends import backend_for, backends_for, can_run, row_options
    from engines.backends.row_key import RowKey

    fixed = parse_backend_options(options.backend_options) if options.backend_options else None
    out = []
    for path, name in zip(paths, names):
        own = backend_for(path)
        runs = backends_for(path)
        chosen = [b for b in options.backends if can_run(b, path)] if options.backends else runs
        for backend in chosen:
            if fixed is not None and backend != own:
                sets = [fixed]
            else:
                try:
                    sets = row_options(backend)
                except Exception:  # noqa: BLE001 - not installed (asked for by --backend): one not-run row says why
                    sets = [{}]
            out += [(path, RowKey(name, backend, o)) for o in sets]
    return out


def row_name(key, path: Path) -> str:
    """A row's short name: the file's (as before) on the backend its file calls for, else the whole key."""
    from engines.backends import backend_for

    return key.artifact if key.backend == backend_for(path) and not key.options else str(key)


def effective_precision(file_precision: str, runs_as: str | None) -> str:
    """What a row is gated as: the file's precision, or the backend's when that is lower (an FP32 file run with
    OpenVINO's bf16 hint is a bf16 row)."""
    lower = {"bf16": "bf16", "f16": "fp16"}.get(str(runs_as or ""))
    if lower and PRECISION_ORDER.get(lower, 0) > PRECISION_ORDER.get(file_precision, 9):
        return lower
    return file_precision
