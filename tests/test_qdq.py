"""The Q/DQ core: each flavour's rules on the files it builds, and nodes kept in float reading float values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
from quantize import qdq
from quantize.int8_parent import Int8Options, prepare

torch.set_num_threads(1)
RUNTIME = RuntimeOptions(threads=1, progress=False)


def calibration(tiny_data: Path) -> CalibrationOptions:
    return CalibrationOptions(data=str(Path(tiny_data) / "images" / "train"), num_images=6)


@pytest.fixture(scope="module")
def built(tiny_onnx, tiny_data, tmp_path_factory) -> dict:
    """Both flavours built from one calibration pass (tensorrt with entropy ranges, cpu with percentile), both
    in FP32 graphs (the tensorrt flavour's FP16 graph is test_high_precision.py's and test_int8.py's)."""
    folder = tmp_path_factory.mktemp("qdq")
    out = {}
    for flavour, method in (("tensorrt", "entropy"), ("cpu", "percentile")):
        options = Int8Options(flavour=flavour, method=method, ranges_file=str(folder / "ranges.npz"),
                              high_precision="fp32")
        with prepare(tiny_onnx, options, calibration(tiny_data), RUNTIME) as prep:
            out[flavour] = prep.build(folder / f"model.{flavour}.onnx")
    return out


def _inits(model):
    from onnx import numpy_helper

    return {i.name: (i, numpy_helper.to_array(i)) for i in model.graph.initializer}


def test_tensorrt_flavour_symmetric_int8_per_channel(built):
    import onnx

    model = onnx.load(str(built["tensorrt"]))
    inits = _inits(model)
    assert qdq.check_qdq(model, "tensorrt") == []
    qdqs = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdqs) > 20
    for n in qdqs:
        scale = inits[n.input[1]][1]
        zp_proto, zp = inits[n.input[2]]
        assert zp_proto.data_type == onnx.TensorProto.INT8, n.name
        assert np.all(zp == 0), n.name
        assert inits[n.input[1]][0].data_type == onnx.TensorProto.FLOAT
        assert np.all(scale > 0) and np.all(np.isfinite(scale)), n.name
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]][0].data_type == onnx.TensorProto.INT8  # no INT32 bias DQ for TensorRT
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producers.get(conv.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", f"{conv.name}: weight not quantized"
        w = inits[dq.input[0]][1]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        assert inits[dq.input[1]][1].shape == (w.shape[0],), f"{conv.name}: scales are not one per output channel"
        if len(conv.input) > 2 and conv.input[2]:
            assert conv.input[2] in inits and inits[conv.input[2]][0].data_type == onnx.TensorProto.FLOAT
    assert qdq.opset(model) >= 13


def test_tensorrt_flavour_passes_the_tensorrt_preflight_check_and_cpu_flavour_does_not(built):
    check = pytest.importorskip("engines.check")
    for target in ("trt10", "trt11"):
        res = check.check_file(built["tensorrt"], target=target)
        assert res.ok, res.lines()
    assert not check.check_file(built["cpu"], target="trt10").ok  # U8 activations, INT32 biases


def test_tensorrt_flavour_places_pairs_as_tensorrt_fuses_them(built):
    """Inputs of every Conv and MatMul quantized, a Conv's output only as the input of another weighted layer or
    as the residual input of an Add, one residual input per Add, nothing before a ReLU, Sigmoid or Resize; the
    placement lint agrees."""
    import onnx

    model = onnx.load(str(built["tensorrt"]))
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def dq(name):
        return name in producers and producers[name].op_type == "DequantizeLinear"

    for n in model.graph.node:
        if n.op_type in ("Conv", "MatMul"):
            assert dq(n.input[0]) and dq(n.input[1]), f"{n.name}: inputs not both quantized"
            for q in (c for c in consumers.get(n.output[0], []) if c.op_type == "QuantizeLinear"):
                readers = [r for d in consumers[q.output[0]] for r in consumers[d.output[0]]]
                assert all(r.op_type in ("Add", "Conv", "MatMul") for r in readers), \
                    f"{n.name}: its output is quantized for {[r.name for r in readers]}"
        if n.op_type == "Add":
            assert sum(dq(i) for i in n.input) == 1, f"{n.name}: not exactly its residual input quantized"
            fused = next(i for i in n.input if not dq(i))
            assert producers[fused].op_type == "Conv", n.name
        if n.op_type in ("Relu", "Sigmoid", "Resize", "Concat", "MaxPool"):
            assert not any(dq(i) for i in n.input), f"{n.name} ({n.op_type}) reads a dequantized tensor"
    check = pytest.importorskip("engines.check")
    for target in ("trt10", "trt11"):
        res = check.check_file(built["tensorrt"], target=target)
        assert res.ok and res.warnings == [], res.lines()


def test_placement_lint_names_onnxruntimes_own_placement(built, tiny_onnx, tiny_data, tmp_path):
    """ONNX Runtime's quantizer given the same op types (this project's former tensorrt flavour) puts pairs on
    Conv outputs, on both inputs of each Add and before the final Resize; the lint names each such pair."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    check = pytest.importorskip("engines.check")
    options = Int8Options(flavour="tensorrt", method="minmax", ranges_file=str(tmp_path / "ranges.npz"))
    with prepare(tiny_onnx, options, calibration(tiny_data), RUNTIME) as prep:
        data = {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in prep.ranges().items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), tmp_path / "cache.json")
        old = tmp_path / "former.onnx"
        quantize_static(str(prep.pre_path), str(old), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul", "Add", "Relu", "MaxPool", "Concat"],
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(tmp_path / "cache.json"),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                       "DedicatedQDQPair": True})
    res = check.check_file(old, target="trt10")
    flagged = [p for p in res.warnings if "TensorRT cannot fuse" in p.message]
    model = onnx.load(str(old))
    names = {n.name for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert flagged and all(p.node in names for p in flagged)
    assert any("(Resize)" in p.message for p in flagged)     # the logits before the final upsampling
    assert any("(Add)" in p.message for p in flagged)        # both inputs of a residual Add
    assert len(flagged) > 10, res.lines()


def test_cpu_flavour_unsigned_activations_signed_weights(built):
    import onnx

    model = onnx.load(str(built["cpu"]))
    inits = _inits(model)
    assert qdq.check_qdq(model, "cpu") == []
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in qs:
        assert inits[n.input[2]][0].data_type == onnx.TensorProto.UINT8, n.name
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and inits[n.input[0]][0].data_type == onnx.TensorProto.INT8]
    assert weight_dqs


def test_check_qdq_names_what_breaks_the_tensorrt_rules(built):
    import onnx

    cpu = onnx.load(str(built["cpu"]))
    problems = qdq.check_qdq(cpu, "tensorrt")  # the cpu flavour's unsigned zero points are not TensorRT's
    assert problems and any("not INT8" in p for p in problems)


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_node_kept_in_float_reads_float_values(tiny_onnx, tiny_data, tmp_path, flavour):
    """Also where ORT folded the ReLU before it into an asymmetric Q (cpu flavour): the ReLU is re-applied in float."""
    import onnx

    node = "/head/classifier/Conv"
    options = Int8Options(flavour=flavour, method="minmax", ranges_file=str(tmp_path / "ranges.npz"))
    with prepare(tiny_onnx, options, calibration(tiny_data), RUNTIME) as prep:
        ref = prep.reference(4)
        full, kept = tmp_path / "full.onnx", tmp_path / "kept.onnx"
        prep.build(full)
        prep.build(kept, exclude=[node])
        q = onnx.load(str(kept))
        assert qdq.check_qdq(q, flavour) == []
        onnx.checker.check_model(q)
        producers = {o: n for n in q.graph.node for o in n.output}
        conv = next(n for n in q.graph.node if n.name == node)
        assert producers[conv.input[0]].op_type == "Relu"
        mad_full = ref.measure(full).mean_abs
        mad_kept = ref.measure(kept).mean_abs
        assert mad_kept <= mad_full * 1.05, (mad_kept, mad_full)
