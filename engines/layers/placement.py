"""Where every layer of a built engine runs and in what precision (the build's summary, the engine manifest's ``layer_placement`` and ``layer_precisions``), from the engine inspector's JSON, and the file that keeps it.

After each build the inspector's JSON (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``,
engine built with ``ProfilingVerbosity.DETAILED``) is written as it came, beside the engine, as
``<engine file name>.layers.json`` (``model.int8.engine`` -> ``model.int8.engine.layers.json``; ``cpnet
inspect`` reads that name). :func:`placement` counts it per device and per precision,
:func:`summarize_layer_precisions` per precision, layer type and for the convolutions. Each layer's precision
is :func:`engines.layers.engine_json.layer_precision`, the one reading of it.

The JSON's shape (TensorRT 10.x; 11.x splits "Format/Datatype" into "Format" and "DataType", see
:mod:`engines.layers.engine_json`): ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Name", "Location", "Dimensions",
"Format/Datatype"}], "Outputs": [...], "ParameterType", "Origin", "TacticName"/"TacticValue"}, ...],
"Bindings": [...]}``, as public trtexec ``--exportLayerInfo`` files show it. Reformatting layers are
``"LayerType": "Reformat"`` (``"Origin": "REFORMAT"``, names "Reformatting CopyNode for Input Tensor 0 to
..."); the Q/DQ scale layers TensorRT keeps are also of type Reformat with ``"Origin": "QDQ"``: those are
quantization, not reformatting, and are not counted as reformats. A DLA subgraph is one layer named
``{ForeignNode[first...last]}`` (TensorRT's "[DlaLayer] {ForeignNode[...]}" build log, NVIDIA's
sample_cudla README); the ``LayerType`` spelling "DLA" for it could not be confirmed by search, so a layer
counts as DLA when its LayerType, ParameterType or Origin says DLA. GPU layers may be ForeignNodes too
(Myelin), so the name alone decides nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from cpnet.runtime import atomic_write_bytes

from .engine_json import UNKNOWN, is_reformat, layer_precision, layers_path  # noqa: F401 - the one file name,
# reformat rule and precision reading

#: the word the manifest's counts have always used for a layer whose precision the inspector does not say
MANIFEST_UNKNOWN = "unknown"


def _manifest_precision(layer) -> str:
    p = layer_precision(layer)
    return MANIFEST_UNKNOWN if p == UNKNOWN else p


def write_layers(engine: "str | Path", info_json: str) -> Path:
    """The inspector's JSON, unchanged, beside the engine (atomically)."""
    out = layers_path(engine)
    atomic_write_bytes(out, info_json.encode())
    return out


def _layers(info) -> list:
    if isinstance(info, str):
        info = json.loads(info)
    layers = info.get("Layers", []) if isinstance(info, dict) else info
    return [layer for layer in layers or [] if isinstance(layer, dict)]


def device_of(layer: dict) -> str:
    """"dla" or "gpu", by :func:`engines.layers.engine_json.device_of` (DLA I/O copies count as DLA)."""
    from .engine_json import device_of as shown_device

    return "dla" if shown_device(layer).startswith("DLA") else "gpu"


def placement(info, dla: bool) -> dict:
    """{"by_device": {"dla": n, "gpu": m}, "gpu_layers": [names], "by_precision_device": {...}, "reformats": n}.

    Device and precision counts are of the compute layers; reformatting layers are counted apart (a reformat
    at the DLA/GPU boundary is the cost of a fallback, not one). ``dla``: the engine was built for DLA; only
    then are its GPU layers "fallen back" (``gpu_layers``)."""
    by_device: dict[str, int] = {}
    by_prec: dict[str, dict[str, int]] = {}
    gpu_layers: list[str] = []
    reformats = 0
    for layer in _layers(info):
        if is_reformat(layer):  # counted apart: not a layer of the model, the cost of a format change
            reformats += 1
            continue
        dev = device_of(layer)
        by_device[dev] = by_device.get(dev, 0) + 1
        p = _manifest_precision(layer)
        by_prec.setdefault(dev, {})[p] = by_prec.setdefault(dev, {}).get(p, 0) + 1
        if dla and dev == "gpu":
            gpu_layers.append(str(layer.get("Name", "?")))
    return {"by_device": dict(sorted(by_device.items())), "gpu_layers": gpu_layers if dla else [],
            "by_precision_device": {d: dict(sorted(v.items())) for d, v in sorted(by_prec.items())},
            "reformats": reformats}


def summary_line(p: dict, dla: bool, show: int = 6) -> str:
    """"DLA 71 layers, GPU 6: Resize_1, ...; 4 reformats" (DLA builds), "GPU 40 layers; 2 reformats" otherwise."""
    d = p["by_device"]
    reform = f"; {p['reformats']} reformat layer(s)"
    if not dla:
        return f"GPU {d.get('gpu', 0)} layers{reform}"
    names = p["gpu_layers"]
    tail = (": " + ", ".join(names[:show]) + (f", ... ({len(names) - show} more)" if len(names) > show else "")
            if names else "")
    return f"DLA {d.get('dla', 0)} layers, GPU {d.get('gpu', 0)}{tail}{reform}"


def summarize_layer_precisions(engine_info_json: str) -> dict:
    """Count an engine's layers by precision from IEngineInspector.get_engine_information(JSON): the engine
    manifest's ``layer_precisions``.

    Returns {"layers": N, "by_precision": {"fp16": n, ...}, "by_type": {...}, "convolutions": {"layers": n,
    "by_precision": {...}}}: the last is what says whether INT8 took (the convolutions that read INT8). Every
    layer counts, reformatting ones too; one whose precision is not said (a name-only entry) as "unknown".
    """
    try:
        info = json.loads(engine_info_json)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"engine inspector output is not JSON ({e})") from None
    layers = info.get("Layers", []) if isinstance(info, dict) else info
    by_prec: dict[str, int] = {}
    by_type: dict[str, int] = {}
    conv_prec: dict[str, int] = {}
    for layer in layers or []:
        p = _manifest_precision(layer)
        by_prec[p] = by_prec.get(p, 0) + 1
        t = layer.get("LayerType", "unknown") if isinstance(layer, dict) else "unknown"
        by_type[t] = by_type.get(t, 0) + 1
        if "convolution" in t.lower():  # CaskConvolution, CaskDeconvolution, Convolution
            conv_prec[p] = conv_prec.get(p, 0) + 1
    return {"layers": sum(by_prec.values()), "by_precision": dict(sorted(by_prec.items())),
            "by_type": dict(sorted(by_type.items())),
            "convolutions": {"layers": sum(conv_prec.values()), "by_precision": dict(sorted(conv_prec.items()))}}
