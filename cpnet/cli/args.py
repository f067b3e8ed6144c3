"""Argument groups defined once and shared by every command (in the spirit of Polygraphy's tools).

A command subscribes to the groups it needs; each group adds its flags with one
name, one unit and one help text, and has a builder that turns the parsed flags
into the option record the library takes:

- :func:`add_input`: the input artifact, positional everywhere (run dir, checkpoint, ONNX file, engine);
- :func:`add_output`: ``-o/--output``;
- :func:`add_calibration` / :func:`calibration_options`: ``--calib-data``, ``--data-root``, ``--num-images``, ``--seed``;
- :func:`add_data_root`: ``--data-root`` alone, for the commands that read a config's dataset;
- :func:`add_runtime` / :func:`runtime_options`: ``--device``, ``--threads``, ``--providers``, ``--no-progress``;
- :func:`add_backend` / :func:`backend_options`: ``--backend`` and ``--backend-options KEY=VALUE,...`` (the
  choices are the registry's, passed in by the command: this stage names no backend);
- :func:`add_json`: ``--json FILE`` on every command that prints figures;
- :func:`add_keep_float` / :func:`keep_float_options`, :func:`add_max_disagreement`, :func:`add_max_miou_drift`:
  the precision gates.
"""

from __future__ import annotations

import argparse

from cpnet.runtime.options import CalibrationOptions, RuntimeOptions


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def int_in(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high`` (a value with no upper bound can hang a command
    or exhaust the machine's memory)."""
    def parse(text: str) -> int:
        value = _whole_number(text, low)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {text}")
        return value

    return parse


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more, got {text}")
    return value


def percent(text: str) -> float:
    value = non_negative_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"is a percentage, 0 to 100, got {text}")
    return value


def add_input(p: argparse.ArgumentParser, metavar: str, help: str, nargs=None) -> None:
    p.add_argument("input", metavar=metavar, nargs=nargs, help=help)


def add_output(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("-o", "--output", metavar="PATH", help=help)


def add_json(p: argparse.ArgumentParser, what: str = "the figures") -> None:
    p.add_argument("--json", metavar="FILE", help=f"also write {what} to FILE as JSON (written atomically)")


def add_calibration(p: argparse.ArgumentParser, num_images: int, what: str = "calibration") -> None:
    g = p.add_argument_group(f"{what} images")
    g.add_argument("--calib-data", metavar="DIR|CONFIG",
                   help="a folder of images, or a config name/YAML whose training split is used "
                        "(default: the dataset of the config in the model's manifest)")
    add_data_root(g)
    g.add_argument("--num-images", type=positive_int, default=num_images, metavar="N",
                   help=f"how many images (default {num_images})")
    g.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed that picks the subset when there are more images (default 0)")


def add_data_root(p, purpose: str = "on this machine when the images come from a config") -> None:
    """``--data-root DIR``: where a config's dataset lies on this machine (``args.data_root``; None: the config's
    ``data.root``); ``purpose`` ends the help text, what the root is for in this command."""
    p.add_argument("--data-root", metavar="DIR", help=f"dataset root {purpose}")


def calibration_options(args: argparse.Namespace) -> CalibrationOptions:
    return CalibrationOptions(data=args.calib_data, data_root=args.data_root, num_images=args.num_images,
                              seed=args.seed)


def add_runtime(p: argparse.ArgumentParser, device: bool = False, providers: bool = False) -> None:
    g = p.add_argument_group("runtime")
    if device:
        g.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                       help="where PyTorch runs (default auto: CUDA when present, else the CPU)")
    if providers:
        g.add_argument("--providers", metavar="LIST",
                       help="ONNX Runtime providers, comma separated: cpu, cuda, tensorrt (default cpu)")
    g.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: the library's choice, all cores)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (plain log lines)")


def add_engine_trust(p: argparse.ArgumentParser) -> None:
    """--trust-engine and --allow-host-code: what a TensorRT engine may do, on the user's word only; and
    --engine-cache: where engines built on first use from ONNX files (--backend tensorrt) are kept."""
    g = p.add_argument_group("TensorRT engines")
    g.add_argument("--trust-engine", action="store_true",
                   help="open engines that have no manifest (unverified native code; only engines you built)")
    g.add_argument("--allow-host-code", action="store_true",
                   help="let version-compatible engines run the host code they carry (native code in this "
                        "process; only engines you built or trust)")
    g.add_argument("--engine-cache", metavar="DIR",
                   help="with --backend tensorrt on an ONNX file: keep the engine built on first use in DIR "
                        "(default: beside the ONNX file, where cpnet build writes it)")


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    providers = getattr(args, "providers", None) or ""
    return RuntimeOptions(device=getattr(args, "device", "auto"), threads=getattr(args, "threads", None),
                          providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
                          progress=not getattr(args, "no_progress", False),
                          trust_engine=bool(getattr(args, "trust_engine", False)),
                          allow_host_code=bool(getattr(args, "allow_host_code", False)),
                          engine_cache=getattr(args, "engine_cache", None))


def add_keep_float(p: argparse.ArgumentParser, precision: str, auto: bool = False) -> None:
    extra = ", or 'auto' (greedy, most sensitive first, until the drift limit holds)" if auto else ""
    p.add_argument("--keep-float", default="", metavar="NODE,..." + ("|auto" if auto else ""),
                   help=f"node names to leave in float instead of {precision}{extra}")


def keep_float_options(args: argparse.Namespace, auto: bool = False) -> dict:
    """``--keep-float`` as option fields: ``keep_float``, the node names in order; with ``auto`` (the flag was added
    with ``auto=True``) also ``auto_keep_float``, whether 'auto' is among them (then not a node name)."""
    names = tuple(k.strip() for k in args.keep_float.split(",") if k.strip())
    if not auto:
        return {"keep_float": names}
    return {"keep_float": tuple(n for n in names if n != "auto"), "auto_keep_float": "auto" in names}


def add_max_disagreement(p: argparse.ArgumentParser, default: float) -> None:
    p.add_argument("--max-disagreement", type=percent, default=default, metavar="PERCENT",
                   help=f"largest share of pixels whose class may differ from the FP32 model's, in percent "
                        f"(no labels needed; default {default:g})")


def add_max_miou_drift(p: argparse.ArgumentParser, default: float | None, default_text: str | None = None) -> None:
    """``default=None`` with ``default_text`` when the limit depends on something else (the drift report's
    per-precision limits)."""
    text = default_text if default_text is not None else f"{default:g}"
    p.add_argument("--max-miou-drift", type=non_negative_float, default=default, metavar="POINTS",
                   help=f"largest mIoU drop against the reference, in mIoU points (default {text})")


def _backend_options_type(text: str) -> str:
    from cpnet.runtime.errors import UserError
    from cpnet.runtime.options import parse_backend_options

    try:
        parse_backend_options(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_backend(p: argparse.ArgumentParser, choices, multiple: bool = False, options_help: str = "") -> None:
    """``--backend`` (one of ``choices``, the backend registry's names; with ``multiple`` a comma list) and
    ``--backend-options KEY=VALUE,...`` (what the backend takes, e.g. openvino's precision=bf16)."""
    g = p.add_argument_group("backend")
    names = "|".join(choices)
    if multiple:
        def backend_list(text: str) -> tuple[str, ...]:
            items = tuple(t.strip() for t in text.split(",") if t.strip())
            bad = [t for t in items if t not in choices]
            if bad or not items:
                raise argparse.ArgumentTypeError(f"unknown backend(s) {', '.join(bad) or repr(text)}; choose from "
                                                 f"{', '.join(choices)}")
            return items

        g.add_argument("--backend", type=backend_list, metavar="NAME,...",
                       help=f"run each artifact on these backends ({names}; default: every installed backend "
                            f"that runs its kind of file)")
    else:
        g.add_argument("--backend", choices=tuple(choices), metavar=names,
                       help="the backend that runs the artifact (default: the one its file type calls for)")
    g.add_argument("--backend-options", type=_backend_options_type, metavar="KEY=VALUE,...",
                   help="options of that backend" + (f" ({options_help})" if options_help else ""))


def backend_options(args: argparse.Namespace) -> dict:
    """``--backend-options`` as the dict engines.open takes."""
    from cpnet.runtime.options import parse_backend_options

    return parse_backend_options(getattr(args, "backend_options", None))
