"""A TensorRT engine layer by layer, from the engine inspector's JSON recorded beside it at build time.

``cpnet build`` stores ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``, with the
engine built at ``ProfilingVerbosity.DETAILED``, as ``<engine file name>.layers.json`` (``model.int8.engine``
-> ``model.int8.engine.layers.json``): the JSON exactly as TensorRT returns it, the same document trtexec's
``--exportLayerInfo`` writes and TREx (TensorRT's engine explorer) reads. Its shape, as TensorRT 8.6 to 10.x
write it::

    {"Layers": [{"Name": "...", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
                 "Inputs": [{"Name": "...", "Dimensions": [1, 64, 64, 64],
                             "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
                 "Outputs": [...], "Metadata": "[ONNX Layer: /backbone/conv1/Conv]",
                 "Origin": "...", "TacticName": "sm80_xmma_fprop_...", "TacticValue": "0x..."}, ...],
     "Bindings": ["input", "logits"]}

Reformatting layers (layout or precision changes TensorRT inserts between layers) are named
``Reformatting CopyNode for ...`` with ``LayerType`` ``Reformat``. An engine built without detailed
verbosity lists the layers as plain name strings; they are shown by name only.

TensorRT 11.x splits each tensor's ``Format/Datatype`` into ``Format`` and ``DataType`` and replaces
``Bindings`` with ``I/O Tensors`` ("Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"); both shapes
are read. A tensor's precision is its ``DataType`` (11.x), else the precision word of its ``Format/Datatype``
(10.x) or ``Format`` (:func:`format_precision`); a layer's is the lowest floating or quantized precision among
its inputs (its outputs when it has none), so a Q/DQ-fused INT8 convolution reads INT8 and counts as int8
(:func:`layer_precision`: the one reading, for ``cpnet inspect``, the manifest's ``layer_precisions`` and
``layer_placement``), and the outputs' is shown beside it. Device: DLA for layers TensorRT hands to a DLA
core (a ``LayerType`` naming DLA), ``DLA I/O`` for the copies to and from DLA memory (named ``... to nvm``,
``... from nvm``, ``... copy finish`` in TensorRT's DLA builds), GPU otherwise; this rule follows the names
TensorRT's build log and profiles give DLA layers and has not met a real DLA engine here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from cpnet.runtime.errors import UserError, first_line

LAYERS_SUFFIX = ".layers.json"
#: TensorRT separates the ONNX node names of a fused layer's Metadata with this character (TREx replaces it)
_METADATA_SEPARATORS = ("\x1e", "\x1f")

# Order matters: the first word found names the precision ("Int8" before "FP32" in "...Int8 ... FP32 ...").
_PRECISION_WORDS = [("int8", "int8"), ("uint8", "uint8"), ("fp8", "fp8"), ("e4m3", "fp8"), ("fp4", "fp4"),
                    ("e2m1", "fp4"), ("int4", "int4"), ("bfloat16", "bf16"), ("bf16", "bf16"), ("fp16", "fp16"),
                    ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32"), ("int32", "int32"), ("int64", "int64"),
                    ("bool", "bool")]
#: floating and quantized precisions, lowest first: a layer counts at the lowest one it reads
PRECISION_ORDER = ("int8", "uint8", "fp8", "fp4", "int4", "fp16", "bf16", "fp32")
UNKNOWN = "?"


def layers_path(engine: "str | Path") -> Path:
    """Where the build records an engine's layer table: beside it, named after the whole file name."""
    engine = Path(engine)
    return engine.with_name(engine.name + LAYERS_SUFFIX)


def format_precision(fmt: str) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' -> 'int8'; 'Half' -> 'fp16'; '?' if none."""
    low = fmt.lower()
    found = [(m.start(), name) for word, name in _PRECISION_WORDS
             for m in [re.search(rf"(?<![a-z]){word}(?![a-z0-9])", low)] if m]
    return min(found)[1] if found else UNKNOWN


def _clean(text: str) -> str:
    for sep in _METADATA_SEPARATORS:
        text = text.replace(sep, " + ")
    return text


@dataclass
class LayerRow:
    index: int
    name: str
    type: str
    precision: str
    output_precision: str
    device: str
    reformat: bool
    tactic: str
    origin: str  # the ONNX node(s) it came from (Metadata), else TensorRT's Origin field

    def as_dict(self) -> dict:
        return asdict(self)


def _device(name: str, layer_type: str, parameter_type: str = "", origin: str = "") -> str:
    if any("dla" in f.lower() for f in (layer_type, parameter_type, origin)):
        return "DLA"
    if name.endswith((" to nvm", " from nvm", " copy finish")):
        return "DLA I/O"
    return "GPU"


def device_of(layer: "dict | str") -> str:
    """Where a layer runs: "DLA", "DLA I/O" (the copies in and out of a DLA subgraph) or "GPU". A DLA subgraph is
    one layer named ``{ForeignNode[first...last]}``, but GPU (Myelin) layers may be ForeignNodes too, so the
    name decides nothing: the layer counts as DLA when its LayerType, ParameterType or Origin says DLA."""
    if isinstance(layer, str):
        return _device(layer, "")
    return _device(str(layer.get("Name", "")), str(layer.get("LayerType", "")), str(layer.get("ParameterType", "")),
                   str(layer.get("Origin", "")))


def is_reformat(layer: "dict | str") -> bool:
    """A reformatting layer (it copies a tensor into another format; costs time). The Q/DQ scale layers
    TensorRT keeps are of type Reformat too, with ``"Origin": "QDQ"``: quantization, not reformatting."""
    if isinstance(layer, str):
        return layer.startswith("Reformatting CopyNode")
    if str(layer.get("Origin", "")).upper() == "QDQ":
        return False
    return str(layer.get("LayerType", "")) == "Reformat" or str(layer.get("Name", "")).startswith("Reformatting CopyNode")


def tensor_precision(tensor: "dict | str") -> str:
    """One tensor entry's precision: its ``DataType`` (11.x), else its ``Format/Datatype`` (10.x) or ``Format``
    read by :func:`format_precision`; '?' when it names none."""
    if isinstance(tensor, dict):
        tensor = tensor.get("DataType") or tensor.get("Format/Datatype") or tensor.get("Format") or ""
    return format_precision(str(tensor)) if isinstance(tensor, str) and tensor else UNKNOWN


def lowest_precision(tensors) -> str:
    """The lowest floating or quantized precision (``PRECISION_ORDER``) among tensor entries; where none has one,
    the first other type named (int32 shape arithmetic, bool); '?' when none names a precision."""
    found = [p for p in map(tensor_precision, tensors or ()) if p != UNKNOWN]
    ranked = [p for p in found if p in PRECISION_ORDER]
    if ranked:
        return min(ranked, key=PRECISION_ORDER.index)
    return found[0] if found else UNKNOWN


def layer_precision(layer: "dict | str") -> str:
    """A layer's precision: the lowest its inputs read (:func:`lowest_precision`), its outputs' where the inputs
    name none; '?' for a name-only entry (an engine built without ProfilingVerbosity.DETAILED)."""
    if not isinstance(layer, dict):
        return UNKNOWN
    precision = lowest_precision(layer.get("Inputs"))
    return precision if precision != UNKNOWN else lowest_precision(layer.get("Outputs"))


def layer_rows(document: dict, source: str = "the layer table") -> list[LayerRow]:
    """The rows of an inspector JSON document (see the module docstring); UserError when it is not one."""
    layers = document.get("Layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        raise UserError(f"{source}: not a TensorRT engine inspector document (no \"Layers\" list)")
    rows = []
    for i, layer in enumerate(layers):
        if isinstance(layer, str):  # built without ProfilingVerbosity.DETAILED: names only
            rows.append(LayerRow(i, _clean(layer), "?", "?", "?", device_of(layer), is_reformat(layer), "", ""))
            continue
        if not isinstance(layer, dict):
            raise UserError(f"{source}: layer {i} is neither an object nor a name")
        name = _clean(str(layer.get("Name", f"layer {i}")))
        layer_type = str(layer.get("LayerType", "?"))
        shown_type = layer_type if "ParameterType" not in layer else f"{layer['ParameterType']} ({layer_type})"
        origin = _clean(str(layer.get("Metadata") or layer.get("Origin") or ""))
        rows.append(LayerRow(i, name, shown_type, layer_precision(layer), lowest_precision(layer.get("Outputs")),
                             device_of(layer), is_reformat(layer), str(layer.get("TacticName", "")), origin))
    return rows


def detailed(rows: list[LayerRow]) -> bool:
    """Whether the table came from a detailed (ProfilingVerbosity.DETAILED) build: types are known."""
    return any(r.type != "?" for r in rows)


def counts(rows: list[LayerRow]) -> dict:
    """Layers per precision and per device, and how many are reformatting layers."""
    compute = [r for r in rows if not r.reformat]
    return {"layers": len(rows), "reformat": len(rows) - len(compute),
            "precision": dict(Counter(r.precision for r in compute).most_common()),
            "device": dict(Counter(r.device for r in rows).most_common())}


def read_layers(engine: "str | Path") -> tuple[Path, dict]:
    """The recorded inspector document of an engine: (its path, the parsed JSON). A missing or unreadable one
    is one UserError line saying how to get it."""
    path = layers_path(engine)
    if not path.is_file():
        raise UserError(f"{engine}: no layer table recorded beside it ({path.name}); rebuild the engine with "
                        f"cpnet build, which stores TensorRT's engine inspector output there")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable as JSON ({first_line(e, 200)}); rebuild the engine with cpnet build") \
            from None
