"""The TensorRT layer against the fake TensorRT / PyCUDA / cuda-python of tests/fake_tensorrt (no TensorRT here).

The fake is strict where the real libraries are (see its docstring): the public names of each class and enum
are those of the real binding of the chosen version, a CUDA context is current per thread, I/O has real
dtypes, engines compute (ONNX Runtime under a plan header), and the documented failure paths fail. What it
proves is that the code calls names that exist and in a working order, on any thread; not what a real
TensorRT does with the files (the ``tensorrt``-marked tests in test_tensorrt.py do that where it is present).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engines
from cpnet.runtime import MissingDependency, UserError, manifest_path, read_manifest, sha256_file, write_manifest
from engines import build_engine
from engines.backends import tensorrt_backend
from engines.trt.build import build_serialized_engine
from engines.trt.cuda_graph import CudaGraph, CudaGraphError
from engines.trt.engine import device_memory_size
from engines.trt.logger import init_plugins, make_logger
from engines.trt.manifest import DeserializeOptions, check_engine_manifest
from engines.trt.options import BuildOptions, validate_hardware_compatibility
from fake_tensorrt import AMPERE, TURING, child_env
from fake_tensorrt.names import VERSIONS, load_names
from fake_tensorrt.trt import CACHE_MAGIC, FakeMisuse, cache_entries, plan_header

ALL_VERSIONS = ("10.3.0", "10.16.1", "11.4.1")


# ------------------------------------------------------------------------------------------ model files


def _conv_model(path: Path, batch=1, in_type=TensorProto.FLOAT, out_type=None, prior=False, weight=1.0,
                precision="fp32") -> Path:
    """image (B, 3, 4, 4) -> logits (B, 2, 4, 4) = weight * (sum of the channels); ``prior``: a second output
    (B, 16, 16) whose row i is pixel i of channel 0 times 0.5. Cast nodes give other I/O dtypes."""
    out_type = in_type if out_type is None else out_type
    nodes, inits = [], [numpy_helper.from_array(np.full((2, 3, 1, 1), weight, np.float32), "W")]
    x = "image"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["image"], ["x32"], to=TensorProto.FLOAT, name="cast_in"))
        x = "x32"
    y = "logits" if out_type == TensorProto.FLOAT else "y32"
    nodes.append(helper.make_node("Conv", [x, "W"], [y], name="conv"))
    if out_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [y], ["logits"], to=out_type, name="cast_out"))
    b = "B" if batch is None else batch
    outputs = [helper.make_tensor_value_info("logits", out_type, [b, 2, 4, 4])]
    if prior:
        inits += [numpy_helper.from_array(np.array([0], np.int64), "c0"),
                  numpy_helper.from_array(np.array([1], np.int64), "c1"),
                  numpy_helper.from_array(np.array([-1, 16, 1], np.int64), "shape3"),
                  numpy_helper.from_array(np.array([1, 1, 16], np.int64), "reps"),
                  numpy_helper.from_array(np.array(0.5, np.float32), "half")]
        nodes += [helper.make_node("Slice", [x, "c0", "c1", "c1"], ["ch0"], name="ch0"),  # channel 0
                  helper.make_node("Reshape", ["ch0", "shape3"], ["col"], name="col"),
                  helper.make_node("Tile", ["col", "reps"], ["rows"], name="rows"),
                  helper.make_node("Mul", ["rows", "half"], ["prior"], name="prior_scale")]
        outputs.append(helper.make_tensor_value_info("prior", TensorProto.FLOAT, [b, 16, 16]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", in_type, [b, 3, 4, 4])],
                              outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    manifest = {"kind": "onnx", "precision": precision, "input_size": [4, 4], "classes": ["a", "b"],
                "mean": [0, 0, 0], "std": [1, 1, 1], "sha256": sha256_file(path)}
    if prior:
        manifest["prior"] = {"name": "prior", "grid": [4, 4]}
    write_manifest(path, manifest)
    return path


@pytest.fixture
def onnx_file(tmp_path):
    return _conv_model(tmp_path / "model.onnx")


def _build(onnx_file, **kw):
    opts = BuildOptions(onnx=str(onnx_file), timing_cache=kw.pop("timing_cache", ""), progress=False, **kw)
    return build_engine.build(opts)


def _deserializations(world):
    return [c for c in world.calls if isinstance(c, tuple) and c[0] == "deserialize"]


def _x(seed=0, batch=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, 4, 4)).astype(np.float32)


def _expected(x, weight=1.0):
    return np.repeat(x.sum(1, keepdims=True) * weight, 2, axis=1)


# ------------------------------------------------------------------------------------------ the name lists


@pytest.mark.parametrize("key", sorted(set(VERSIONS.values())))
def test_name_lists_record_their_wheel(key):
    d = json.loads((Path(__file__).parent / "fake_tensorrt" / "names" / f"trt-{key}.json").read_text())
    src = d["source"]
    assert src["package"] == "tensorrt-cu12-bindings" and src["version"].startswith(key + ".")
    assert len(src["sha256"]) == 64 and src["wheel"].endswith(".whl") and "extract_names.py" in src["method"]
    assert "ICudaEngine" in d["classes"] and "BuilderFlag" in d["enums"] and "nptype" in d["python"]


def test_the_lists_hold_what_the_versions_differ_in():
    """The facts the code depends on, as NVIDIA's wheels have them."""
    n103, n1016, n114 = (load_names(v) for v in ("10.3.0", "10.16.1", "11.4.1"))
    assert "FP16" in n103["enums"]["BuilderFlag"] and "FP16" not in n114["enums"]["BuilderFlag"]
    assert "INT8" not in n114["enums"]["BuilderFlag"] and "UINT8" in n114["enums"]["DataType"]
    assert "device_memory_size" in n103["classes"]["ICudaEngine"]
    assert "device_memory_size" not in n114["classes"]["ICudaEngine"]
    assert all("device_memory_size_v2" in n["classes"]["ICudaEngine"] for n in (n103, n1016, n114))
    assert "SAME_COMPUTE_CAPABILITY" not in n103["enums"]["HardwareCompatibilityLevel"]
    assert "SAME_COMPUTE_CAPABILITY" in n1016["enums"]["HardwareCompatibilityLevel"]
    assert "int8_calibrator" in n103["classes"]["IBuilderConfig"]
    assert "int8_calibrator" not in n114["classes"]["IBuilderConfig"]
    assert all("engine_host_code_allowed" in n["classes"]["Runtime"] for n in (n103, n1016, n114))


def test_the_fake_implements_no_name_the_real_library_lacks(fake_trt):
    """Every public name the fake defines on a class is in some version's list (names are never invented)."""
    from fake_tensorrt.trt import Strict

    for version in ALL_VERSIONS:
        world = fake_trt(version)
        trt = world.trt
        names = load_names(version)
        for cls_name, allowed in names["classes"].items():
            cls = getattr(trt, cls_name, None)
            if cls is None or not isinstance(cls, type) or not issubclass(cls, Strict):
                continue
            defined = {n for c in cls.__mro__ if c not in (Strict, object) for n in vars(c) if not n.startswith("_")}
            every = set().union(*(load_names(v)["classes"].get(cls_name, []) for v in ALL_VERSIONS))
            assert defined <= every | set(allowed), (version, cls_name, defined - every)
        module = set(names["module"]) | set(names["python"])
        assert {n for n in vars(trt) if not n.startswith("_")} <= module


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_a_misspelled_name_fails_as_in_pybind11(fake_trt, onnx_file, version):
    world = fake_trt(version)
    trt = world.trt
    with pytest.raises(AttributeError):
        trt.BuilderFlag.FP61
    with pytest.raises(AttributeError):
        trt.Runtime(trt.Logger()).engine_host_code_alowed = True  # set, not only get
    with pytest.raises(AttributeError):
        trt.Builder(trt.Logger()).create_builder_config().builder_optimisation_level = 3
    with pytest.raises(AttributeError):
        trt.HardwareCompatibilityLevel.AMPERE_PLUS_PLUS
    assert not hasattr(trt, "OnnxParserFlags")


def test_a_version_probe_on_the_class_itself_answers_as_that_version_does(fake_trt):
    """``hasattr(trt.ICudaEngine, name)`` is how code probes a TensorRT version: the class answers from its names
    list, as the instance does."""
    trt11 = fake_trt("11.4.0").trt
    assert not hasattr(trt11.ICudaEngine, "device_memory_size") and hasattr(trt11.ICudaEngine, "device_memory_size_v2")
    assert not hasattr(trt11.Builder, "platform_has_fast_fp16")
    trt10 = fake_trt("10.16.1").trt
    assert hasattr(trt10.ICudaEngine, "device_memory_size") and hasattr(trt10.Builder, "platform_has_fast_fp16")


def test_the_fake_takes_the_bindings_argument_names_and_types(fake_trt, onnx_file):
    """Keyword names as pyCore.cpp/pyOnnx.cpp spell them, and pybind11's str-only path: a call the real bindings
    refuse is refused here."""
    trt = fake_trt("10.16.1").trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(pool=trt.MemoryPoolType.WORKSPACE, pool_size=1 << 20)
    with pytest.raises(TypeError):
        config.set_memory_pool_limit(pool=trt.MemoryPoolType.WORKSPACE, size=1 << 20)
    config.set_flag(flag=trt.BuilderFlag.TF32)
    parser = trt.OnnxParser(builder.create_network(0), logger)
    with pytest.raises(TypeError):
        parser.parse_from_file(onnx_file)  # a Path: the real caster takes str only
    assert parser.parse_from_file(model=str(onnx_file))


def test_names_a_version_lacks_fail(fake_trt, onnx_file):
    trt11 = fake_trt("11.4.1").trt
    with pytest.raises(AttributeError):
        trt11.BuilderFlag.FP16
    # the code asks for FP16 on TensorRT 11 nowhere: validate_build_options refuses --fp16-flag first
    with pytest.raises(UserError, match="removed BuilderFlag.FP16"):
        _build(onnx_file, fp16_flag=True)
    # and were it to get past that, the fake would fail where TensorRT 11 does
    with pytest.raises(AttributeError):
        build_serialized_engine(trt11, BuildOptions(onnx=str(onnx_file), fp16_flag=True,
                                                                      progress=False), (4, 4))
    with engines.open(_build(onnx_file)) as e:
        with pytest.raises(AttributeError):
            e._engine.device_memory_size  # removed in 11: the code reads device_memory_size_v2
        assert device_memory_size(e._engine) == 1 << 20
    fake_trt("10.3.0")
    with pytest.raises(UserError, match="10.3.0 has no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"):
        _build(onnx_file, hardware_compatibility="same-cc")
    fake_trt("10.16.1")
    assert read_manifest(_build(onnx_file, hardware_compatibility="same-cc"))["tensorrt"]["hardware_compatibility"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_build_and_run_on_every_version(fake_trt, onnx_file, version):
    world = fake_trt(version)
    out = _build(onnx_file)
    m = read_manifest(out)
    assert m["tensorrt"]["version"] == version and m["layer_precisions"]["layers"] == 1
    x = _x()
    with engines.open(out) as e:
        np.testing.assert_allclose(e.infer(x), _expected(x), rtol=1e-6)
        assert e.device_memory()["engine_device_memory"] == 1 << 20  # device_memory_size_v2 on 10 and 11
    assert not world.misuse


# ------------------------------------------------------------------------------------------ §1 threads


def test_a_backend_opened_in_one_thread_runs_in_another(fake_trt, onnx_file):
    """The demo's case: engines.open in the main thread, infer in the inference thread (old code: PyCUDA's
    ``LogicError: cuMemcpyHtoDAsync failed: invalid device context``, as pycuda.autoprimaryctx is current
    in the importing thread only)."""
    fake_trt()
    out = _build(onnx_file)
    x = _x(1)
    results, errors = [], []
    with engines.open(out) as e:
        def work():
            try:
                results.append(e.infer(x))
                results.append(e.segment(np.zeros((4, 4, 3), np.uint8)))
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        t = threading.Thread(target=work)
        t.start()
        t.join(30)
    assert not errors, errors
    np.testing.assert_allclose(results[0], _expected(x), rtol=1e-6)
    assert results[1].shape == (4, 4)


def test_opened_and_closed_in_a_thread_used_nowhere_else(fake_trt, onnx_file):
    fake_trt()
    out = _build(onnx_file)
    box = {}

    def opener():
        box["e"] = engines.open(out)

    t = threading.Thread(target=opener)
    t.start()
    t.join(30)
    x = _x(2)
    np.testing.assert_allclose(box["e"].infer(x), _expected(x), rtol=1e-6)  # the main thread, no context yet
    box["e"].close()


def test_the_fake_refuses_cuda_calls_without_a_current_context(fake_trt):
    """What made the old code fail: PyCUDA's error, type and message, from a thread with no context."""
    world = fake_trt()
    import pycuda._driver
    import pycuda.autoprimaryctx  # noqa: F401 - the primary context, current in this thread only
    import pycuda.driver as cuda

    cuda.mem_alloc(16)  # fine here
    err = []
    t = threading.Thread(target=lambda: err.append(_catch(lambda: cuda.mem_alloc(16))))
    t.start()
    t.join()
    assert isinstance(err[0], pycuda._driver.LogicError)
    assert str(err[0]) == "cuMemAlloc failed: invalid device context"
    assert world.cuda.current() is not None and world.cuda.current().primary


def _catch(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


def test_two_threads_on_one_backend_get_their_own_results(fake_trt, onnx_file):
    """Calls take turns on the one execution context; without the lock the copies of one thread land in the
    other's run (the fake pauses inside each copy, as a real copy takes time)."""
    world = fake_trt(latency_s=0.001)
    out = _build(onnx_file)
    errors, bad = [], []
    with engines.open(out) as e:
        def work(seed):
            try:
                for i in range(25):
                    x = _x(seed * 100 + i)
                    if not np.allclose(e.infer(x), _expected(x), rtol=1e-5):
                        bad.append((seed, i))
            except Exception as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and not bad and not world.misuse, (errors[:1], bad[:3], world.misuse[:1])
    assert world.executions == 50


def test_the_fake_catches_one_context_run_by_two_threads(fake_trt, onnx_file):
    """What the lock prevents: a second thread enqueuing on an execution context whose work is not synchronized."""
    fake_trt()
    out = _build(onnx_file)
    with engines.open(out) as e:
        ctx, stream = e._context, e._stream
        with e._cuda_context:
            assert ctx.execute_async_v3(stream_handle=stream.handle)  # not synchronized yet
        err = []
        t = threading.Thread(target=lambda: err.append(_catch(lambda: ctx.execute_async_v3(stream.handle))))
        t.start()
        t.join()
        assert isinstance(err[0], FakeMisuse)
        with e._cuda_context:
            stream.synchronize()


def test_a_new_context_per_thread_breaks_tensorrt(fake_trt, onnx_file):
    """The policy's "never make_context": TensorRT's objects belong to the primary context."""
    world = fake_trt()
    out = _build(onnx_file)
    import pycuda.driver as cuda

    with engines.open(out) as e:
        ctx = cuda.Device(0).make_context()
        try:
            assert not e._context.execute_async_v3(stream_handle=e._stream.handle)
        finally:
            ctx.pop()
    assert "invalid resource handle" in world.trt_log[-1][1]


def test_the_demo_pipeline_runs_a_tensorrt_engine_for_200_frames(fake_trt, tmp_path):
    """The demo's threads on a fake engine with a prior output: 200 frames, pause and resume, the prior view
    asked for while paused (the drawing thread runs the model then), a snapshot."""
    import cv2

    from demo.live_loop import CLOSED, TIMEOUT
    from demo.sources import FrameSource, SourceSpec
    from demo.webcam import Demo
    from demo_doubles import FlakyCamera, ScriptedOpener

    world = fake_trt()
    out = _build(_conv_model(tmp_path / "model.prior.onnx", prior=True))
    cam = FlakyCamera(200, period=0.0, shape=(8, 8))
    src = FrameSource(SourceSpec("file", 0, "clip.mp4"), opener=ScriptedOpener([cam]), backoff=())
    with engines.open(out) as backend:
        demo = Demo(backend, src, headless=True, output=str(tmp_path / "o.mp4"), no_drop=True, pace=False)
        assert demo.runner.has_prior
        pipe = demo.live_loop
        shown, redraws = [], 0
        pipe.start()
        while (item := pipe.get(0.2)) is not CLOSED:
            if item is TIMEOUT:
                view = demo.view.get()
                if view.paused and view.point is None:  # the frames in flight are drawn: pick a pixel
                    demo.view.update(point=(3, 2))
                continue
            if item.redraw:
                redraws += 1
                assert item.image is not None
                if demo.view.get().show_prior and demo.view.get().point is not None:
                    demo.view.update(paused=False)  # resume once the prior view was drawn on the paused frame
                continue
            shown.append(item.frame.index)
            demo._last_image = item.image
            if len(shown) == 60:
                demo.on_key(ord(" "))  # pause
                demo.on_key(ord("p"))  # the prior view, on the paused frame
            if len(shown) == 120:
                assert demo.snapshot() is not None
        pipe.join()
    assert shown == list(range(200)) and redraws >= 1
    assert demo.view.get().show_prior and not demo.view.get().paused
    assert cv2.imread(demo.snapshots[0]) is not None
    assert not world.misuse and world.executions >= 200


# ------------------------------------------------------------------------------------------ §2 dtypes


@pytest.mark.parametrize("version", ("10.3.0", "11.4.1"))
def test_fp16_io_engines_run(fake_trt, tmp_path, version):
    fake_trt(version)
    out = _build(_conv_model(tmp_path / "model.fp16.onnx", in_type=TensorProto.FLOAT16, precision="fp16"))
    x = _x(3)
    with engines.open(out) as e:
        assert e._input["dtype"] == np.float16 and e._buffers["logits"].dtype == np.float16
        y = e.infer(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, _expected(x.astype(np.float16).astype(np.float32)), rtol=2e-3, atol=2e-3)
        assert e.segment(np.zeros((4, 4, 3), np.uint8)).shape == (4, 4)


@pytest.mark.parametrize("in_type,out_type,what", [(TensorProto.INT8, TensorProto.FLOAT, "input 'image' is int8"),
                                                   (TensorProto.FLOAT, TensorProto.BOOL, "output 'logits' is bool")])
def test_int8_or_bool_io_is_refused_in_one_line(fake_trt, tmp_path, in_type, out_type, what):
    fake_trt()
    out = _build(_conv_model(tmp_path / "odd.onnx", in_type=in_type, out_type=out_type))
    with pytest.raises(UserError, match=what) as e:
        engines.open(out)
    assert "\n" not in str(e.value) and "FP32 or FP16" in str(e.value)


def test_nptype_maps_the_real_dtypes(fake_trt):
    trt = fake_trt().trt
    D = trt.DataType
    assert [trt.nptype(d) for d in (D.HALF, D.INT8, D.INT32, D.BOOL, D.FLOAT)] == [
        np.float16, np.int8, np.int32, np.bool_, np.float32]
    with pytest.raises(TypeError):
        trt.nptype(D.BF16)


# ------------------------------------------------------------------------------------------ §2 failure paths


def test_a_timing_cache_of_another_tensorrt_starts_empty(fake_trt, onnx_file, caplog):
    cache = onnx_file.with_name("t.cache")
    fake_trt("10.3.0")
    _build(onnx_file, timing_cache=str(cache))
    fake_trt("10.16.1")
    import logging

    with caplog.at_level(logging.INFO):
        _build(onnx_file, timing_cache=str(cache), output=str(onnx_file.with_name("b.engine")))
    assert any("does not match this TensorRT/GPU" in r.getMessage() for r in caplog.records)


def test_a_timing_cache_file_of_another_gpu_is_replaced_not_mixed_into(fake_trt, onnx_file, caplog):
    """TensorRT appends another device's timings when combine() is told to ignore the mismatch, and NVIDIA warns
    that this may lead to functional or performance bugs; the file of another GPU is replaced instead."""
    import logging

    from fake_tensorrt import TURING

    cache = onnx_file.with_name("t.cache")
    fake_trt("10.16.1")
    _build(onnx_file, timing_cache=str(cache))
    first = cache_entries(cache)
    fake_trt("10.16.1", gpu=TURING)
    with caplog.at_level(logging.INFO):
        _build(onnx_file, timing_cache=str(cache), output=str(onnx_file.with_name("b.engine")))
    assert any("could not be merged" in r.getMessage() for r in caplog.records)
    owner = json.loads(cache.read_bytes()[len(CACHE_MAGIC):])["owner"]
    assert len(cache_entries(cache)) == len(first) and owner["gpu"] == "7.5"


def test_the_parser_failing_is_one_line_per_error_with_the_node(fake_trt, onnx_file):
    fake_trt(unsupported_ops=("Conv",))
    with pytest.raises(UserError) as e:
        _build(onnx_file)
    assert "parser error: node 'conv' (Conv): No importer registered for op: Conv" in str(e.value)
    assert not onnx_file.with_name("model.engine").exists()


def test_a_build_the_builder_rejects_is_one_line(fake_trt, onnx_file):
    world = fake_trt(build_fails=True)
    with pytest.raises(UserError, match="TensorRT failed to build an engine from .*model.onnx"):
        _build(onnx_file)
    assert "build" in world.calls


def test_the_builder_rejects_precision_flags_on_a_strongly_typed_network(fake_trt, onnx_file):
    world = fake_trt("10.3.0")
    trt = world.trt
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt.Logger())
    assert parser.parse_from_file(str(onnx_file))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert "not allowed for a strongly typed network" in world.trt_log[-1][1]
    # the weakly typed --fp16-flag path (create_network(0)) takes it
    out = _build(onnx_file, fp16_flag=True)
    assert read_manifest(out)["precision_mode"] == "fp16-flag"


def test_an_engine_tensorrt_cannot_deserialize_is_one_line(fake_trt, onnx_file):
    fake_trt()
    out = _build(onnx_file)
    fake_trt(loads=False)
    with pytest.raises(UserError, match="could not deserialize this engine") as e:
        engines.open(out)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ building, opening


def test_version_compatible_build_needs_the_users_word_to_open(fake_trt, onnx_file):
    """Defect 3.2: host code comes from the command line, never from the sidecar (old code: opened)."""
    world = fake_trt()
    out = _build(onnx_file, version_compatible=True)
    # the build's load check: --version-compatible on the build command line is the user's word
    assert _deserializations(world) == [("deserialize", True, -1)]
    assert world.calls.index("plugins") < world.calls.index("parse") < world.calls.index("build")
    m = read_manifest(out)
    assert m["tensorrt"]["version_compatible"] is True and m["sha256"] == sha256_file(out)
    with pytest.raises(UserError, match="carries host code.*--allow-host-code") as e:
        engines.open(out)
    assert "\n" not in str(e.value) and len(_deserializations(world)) == 1  # refused before TensorRT saw it
    with engines.open(out, allow_host_code=True) as e:
        x = _x()
        np.testing.assert_allclose(e.infer(x), _expected(x), rtol=1e-6)
    assert _deserializations(world)[-1] == ("deserialize", True, -1)


def test_a_swapped_engine_with_a_matching_manifest_gets_no_host_code(fake_trt, onnx_file, tmp_path):
    """The sha256 is an integrity check: someone who swaps the engine rewrites the manifest too. Host code
    still needs the user's flag, and without it TensorRT refuses the plan."""
    world = fake_trt()
    evil = _build(onnx_file, version_compatible=True, output=str(tmp_path / "evil.engine"))
    plain = _build(onnx_file, output=str(tmp_path / "model.engine"))
    m = read_manifest(plain)
    plain.write_bytes(evil.read_bytes())
    write_manifest(plain, {**m, "sha256": sha256_file(plain)})  # manifest says: not version compatible
    with pytest.raises(UserError, match="could not deserialize.*--allow-host-code"):
        engines.open(plain)
    assert _deserializations(world)[-1] == ("deserialize", False, -1)


def test_deserialize_options():
    D = DeserializeOptions
    assert D.from_build_options(BuildOptions(onnx="m.onnx", version_compatible=True)) == D(True, None)
    assert D.from_build_options(BuildOptions(onnx="m.onnx", dla_core=1)) == D(False, 1)
    vc_dla = {"tensorrt": {"version_compatible": True}, "device": "dla:1"}
    assert D.from_manifest(vc_dla) == D(False, 1)  # the manifest never grants host code
    assert D.from_manifest(vc_dla, allow_host_code=True) == D(True, 1)
    assert D.from_manifest(None) == D(False, None) and D.from_manifest(None, allow_host_code=True) == D(True, None)


def test_trust_engine_and_allow_host_code_are_two_flags(fake_trt, onnx_file):
    world = fake_trt()
    out = _build(onnx_file, version_compatible=True)
    manifest_path(out).unlink()
    with pytest.raises(UserError, match="no manifest.*--trust-engine"):
        engines.open(out)
    with pytest.raises(UserError, match="--allow-host-code"):  # trusted, but the plan carries host code
        engines.open(out, trust_engine=True)
    with engines.open(out, trust_engine=True, allow_host_code=True) as e:
        assert e.infer(_x()).shape == (1, 2, 4, 4)
    assert world.calls.index("plugins") < world.calls.index(_deserializations(world)[0])


def test_host_code_flag_reaches_every_verb():
    from cpnet.cli.args import runtime_options
    from cpnet.runtime.options import RuntimeOptions
    from demo.webcam import backend_options
    from engines import benchmark
    from engines.report.rows import open_options

    import argparse

    args = argparse.Namespace(trust_engine=True, allow_host_code=True, threads=None, providers=None)
    rt = runtime_options(args)
    both = {"trust_engine": True, "allow_host_code": True}
    assert rt.engine_options() == both and RuntimeOptions().engine_options() == {}
    assert backend_options("tensorrt", args) == both
    assert open_options("tensorrt", rt) == both
    assert benchmark.options_for("tensorrt", benchmark.BenchmarkOptions(cuda_graph=True), rt) == {
        "cuda_graph": True, **both}
    argv = benchmark._child_argv("m.engine", benchmark.BenchmarkOptions(), rt)
    assert "--trust-engine" in argv and "--allow-host-code" in argv
    assert tensorrt_backend.OPTIONS == ("verbose", "cuda_graph", "trust_engine", "allow_host_code", "engine_cache",
                                        "build")
    for verb in ("engines.benchmark", "demo.webcam", "engines.report.report"):
        import importlib

        p = argparse.ArgumentParser()
        importlib.import_module(verb).add_arguments(p)
        assert p.parse_known_args(["x", "--allow-host-code", "--trust-engine"])[0].allow_host_code
        assert p.parse_known_args(["x", "--engine-cache", "d"])[0].engine_cache == "d"


def test_a_plan_that_does_not_load_is_never_written(fake_trt, onnx_file):
    world = fake_trt(loads=False)
    out = onnx_file.with_name("model.engine")
    out.write_bytes(b"old engine")
    write_manifest(out, {"kind": "engine", "sha256": sha256_file(out)})
    before = manifest_path(out).read_text()
    with pytest.raises(UserError, match="does not load.*nothing written"):
        _build(onnx_file)
    assert out.read_bytes() == b"old engine" and manifest_path(out).read_text() == before
    assert "build" in world.calls


def test_no_stale_manifest_beside_a_new_engine(tmp_path, monkeypatch):
    out = tmp_path / "m.engine"
    out.write_bytes(b"old")
    write_manifest(out, {"kind": "engine", "sha256": sha256_file(out)})

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(build_engine, "write_manifest", crash)
    with pytest.raises(OSError):
        build_engine.write_engine(out, b"new", {"kind": "engine"})
    assert out.read_bytes() == b"new" and not manifest_path(out).exists()


def test_trt10_version_compatible_engine_opens_on_trt11(fake_trt, onnx_file):
    fake_trt("10.3.0")
    out = _build(onnx_file, version_compatible=True)
    world = fake_trt("11.4.1")
    with engines.open(out, allow_host_code=True) as e:
        x = _x()
        np.testing.assert_allclose(e.infer(x), _expected(x), rtol=1e-6)
    assert _deserializations(world) == [("deserialize", True, -1)]
    fake_trt("11.4.0")
    plain = _build(onnx_file, output=str(onnx_file.with_name("plain.engine")))
    fake_trt("11.4.1")
    with pytest.raises(UserError, match="engines do not move between TensorRT versions"):
        engines.open(plain)


def test_dla_engine_runs_on_the_core_it_was_built_for(fake_trt, onnx_file):
    world = fake_trt()
    out = _build(onnx_file, dla_core=1)
    assert out.name == "model.dla1.engine" and _deserializations(world) == [("deserialize", False, 1)]
    assert read_manifest(out)["device"] == "dla:1"
    with engines.open(out):
        pass
    assert _deserializations(world)[-1] == ("deserialize", False, 1) and world.runtimes[-1].DLA_core == 1
    fake_trt(dla_cores=1)
    with pytest.raises(UserError, match="built for DLA core 1, but this device has 1 DLA core"):
        engines.open(out)


def test_dla_engines_refuse_cuda_graphs(fake_trt, onnx_file):
    """Defect 3.1 (old code: accepted, and captured a graph of a DLA engine)."""
    world = fake_trt()
    out = _build(onnx_file, dla_core=0)
    n = len(_deserializations(world))
    with pytest.raises(UserError, match="DLA engine cannot run as a CUDA graph.*without --cuda-graph") as e:
        engines.open(out, cuda_graph=True)
    assert "\n" not in str(e.value) and len(_deserializations(world)) == n


def test_engine_bytes_checked_against_the_manifest_before_tensorrt_sees_them(fake_trt, onnx_file):
    fake_trt()
    out = _build(onnx_file)
    world = fake_trt()
    out.write_bytes(out.read_bytes() + b" ")
    with pytest.raises(UserError, match="does not match its manifest"):
        engines.open(out)
    assert _deserializations(world) == []


def test_set_input_shape_refusal_is_reported(fake_trt, tmp_path):
    fake_trt()
    out = _build(_conv_model(tmp_path / "dyn.onnx", batch=None), batch=2)
    with engines.open(out) as e:
        assert e.infer(_x(batch=2)).shape == (2, 2, 4, 4)
        with pytest.raises(UserError, match=r"refused input shape \(3, 3, 4, 4\).*\(1, 3, 4, 4\) to \(2, 3, 4, 4\)"):
            e.infer(_x(batch=3))


def test_the_profile_is_tuned_for_batch_1(fake_trt, tmp_path):
    """Defect 3.4: opt = the batch most calls use (old code: opt = max)."""
    fake_trt()
    onnx_path = _conv_model(tmp_path / "dyn.onnx", batch=None)
    head = plan_header(_build(onnx_path, batch=4).read_bytes())
    assert head["profile"]["image"] == [[1, 3, 4, 4], [1, 3, 4, 4], [4, 3, 4, 4]]
    head = plan_header(_build(onnx_path, batch=4, opt_batch=2, output=str(tmp_path / "b2.engine")).read_bytes())
    assert head["profile"]["image"][1] == [2, 3, 4, 4]
    with pytest.raises(UserError, match="--opt-batch must be in 1..--batch"):
        _build(onnx_path, batch=2, opt_batch=3)


def test_only_the_asked_outputs_are_copied_back(fake_trt, tmp_path):
    """Defect 3.3: infer() copies the logits only, the prior (N x N floats) only when asked for (old code: both
    on every call)."""
    world = fake_trt()
    out = _build(_conv_model(tmp_path / "model.prior.onnx", prior=True))
    x = _x(4)
    with engines.open(out) as e:
        assert e.output_names == ["logits", "prior"]
        world.dtoh_bytes = 0
        np.testing.assert_allclose(e.infer(x), _expected(x), rtol=1e-6)
        assert world.dtoh_bytes == 2 * 4 * 4 * 4  # the logits' bytes, nothing else
        both = e.infer_all(x)
        assert set(both) == {"logits", "prior"} and both["prior"].shape == (1, 16, 16)
        np.testing.assert_allclose(both["prior"][0, :, 3], x[0, 0].reshape(-1) * 0.5, rtol=1e-6)
        assert world.dtoh_bytes == 2 * 4 * 4 * 4 * 2 + 16 * 16 * 4
        assert all(name in e._context._addr for name in ("image", "logits", "prior"))  # all still bound


def test_concurrent_builds_keep_each_others_timings(fake_trt, onnx_file, tmp_path):
    """Defect 3.5: a build that finishes while another is running merges into the cache file under its lock
    (old code: the later save overwrote the earlier one's timings)."""
    world = fake_trt()
    cache = tmp_path / "shared.cache"
    other = _conv_model(tmp_path / "other.onnx", weight=2.0)

    def the_other_build_finishes_meanwhile(network, config):
        world.on_build = None
        _build(other, timing_cache=str(cache), output=str(tmp_path / "other.engine"))

    world.on_build = the_other_build_finishes_meanwhile
    _build(onnx_file, timing_cache=str(cache))
    assert len(cache_entries(cache)) == 2
    assert Path(str(cache) + ".lock").exists()


def test_file_lock_excludes_other_holders(tmp_path):
    import time

    from cpnet.runtime.files import file_lock

    target = tmp_path / "x.cache"
    order = []

    def second():
        with file_lock(target):
            order.append("second")

    with file_lock(target):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]
    with file_lock(target):
        box = []
        t = threading.Thread(target=lambda: box.append(_catch(lambda: file_lock(target, timeout_s=0.1).__enter__())))
        t.start()
        t.join(10)
    assert isinstance(box[0], UserError) and "x.cache.lock" in str(box[0])


def test_plugins_registered_once_per_tensorrt(fake_trt):
    world = fake_trt()
    logger = make_logger(world.trt)
    assert init_plugins(world.trt, logger) and init_plugins(world.trt, logger)
    assert world.calls.count("plugins") == 1


# ------------------------------------------------------------------------------------------ hardware compatibility


def test_hardware_compatibility_build_and_open(fake_trt, onnx_file):
    fake_trt(gpu=AMPERE)
    out = _build(onnx_file, hardware_compatibility="ampere+")
    assert read_manifest(out)["tensorrt"]["hardware_compatibility"] == "ampere+"
    assert plan_header(out.read_bytes())["hw"] == "AMPERE_PLUS"
    fake_trt(gpu={"name": "Fake RTX 4090", "compute_capability": "8.9", "source": "pycuda"})
    with engines.open(out):
        pass
    fake_trt(gpu=TURING)
    with pytest.raises(UserError, match="Ampere and newer GPUs"):
        engines.open(out)
    fake_trt(gpu=TURING)
    with pytest.raises(UserError, match="needs a build GPU of sm 8.0"):
        _build(onnx_file, hardware_compatibility="ampere+", output=str(onnx_file.with_name("t4.engine")))


def test_hardware_compatibility_options():
    opts = BuildOptions(onnx="m.onnx", hardware_compatibility="ampere+", dla_core=0)
    with pytest.raises(UserError, match="does not apply to DLA"):
        validate_hardware_compatibility(opts, AMPERE, jetson=False)
    opts = BuildOptions(onnx="m.onnx", hardware_compatibility="ampere+")
    with pytest.raises(UserError, match="JetPack"):
        validate_hardware_compatibility(opts, {"name": "Orin", "compute_capability": "8.7"}, jetson=True)
    validate_hardware_compatibility(BuildOptions(onnx="m.onnx", hardware_compatibility="same-cc"),
                                             TURING, jetson=False)
    with pytest.raises(UserError, match="must be one of"):
        validate_hardware_compatibility(BuildOptions(onnx="m", hardware_compatibility="x"))


def test_manifest_check_relaxed_for_hardware_compatible_engines():
    m = {"tensorrt": {"version": "10.3.0", "hardware_compatibility": "ampere+"}, "gpu": AMPERE}
    ada = {"name": "Fake L4", "compute_capability": "8.9"}
    assert check_engine_manifest(m, "10.3.0", ada, "m.engine", jetson=False) == []
    with pytest.raises(UserError, match="sm 8.0"):
        check_engine_manifest(m, "10.3.0", TURING, "m.engine", jetson=False)
    with pytest.raises(UserError, match="JetPack"):
        check_engine_manifest(m, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}, "m.engine",
                                       jetson=True)
    same = {"tensorrt": {"version": "10.3.0", "hardware_compatibility": "same-cc"}, "gpu": AMPERE}
    assert check_engine_manifest(same, "10.3.0", dict(AMPERE, name="Fake A30"), "m.engine") == []
    with pytest.raises(UserError, match="sm 8.0"):
        check_engine_manifest(same, "10.3.0", ada, "m.engine")
    none = {"tensorrt": {"version": "10.3.0"}, "gpu": AMPERE}
    with pytest.raises(UserError):
        check_engine_manifest(none, "10.3.0", ada, "m.engine")


# ------------------------------------------------------------------------------------------ CUDA graphs


def test_cuda_graph_captured_once_then_replayed(fake_trt, onnx_file):
    world = fake_trt()
    out = _build(onnx_file)
    x = _x(5)
    world.calls.clear()
    with engines.open(out, cuda_graph=True) as e:
        first = e.infer(x)  # runs, then captures (the capture itself computes nothing)
        assert e.cuda_graph_active and ("begin_capture", 1) in world.calls  # cudaStreamCaptureModeThreadLocal
        assert world.calls.count("graph_launch") == 0
        second = e.infer(x + 1)
        third = e.infer(x)
        assert world.calls.count("graph_launch") == 2 and "CUDA graph" in e.describe()
    np.testing.assert_allclose(first, _expected(x), rtol=1e-6)
    np.testing.assert_allclose(third, _expected(x), rtol=1e-6)
    np.testing.assert_allclose(second, _expected(x + 1), rtol=1e-6)
    assert "exec_destroy" in world.calls


def test_cuda_graph_replayed_from_another_thread(fake_trt, onnx_file):
    world = fake_trt()
    out = _build(onnx_file)
    x = _x(6)
    with engines.open(out, cuda_graph=True) as e:
        e.infer(x)
        got = []
        t = threading.Thread(target=lambda: got.append(e.infer(x + 2)))
        t.start()
        t.join(30)
    np.testing.assert_allclose(got[0], _expected(x + 2), rtol=1e-6)
    assert world.calls.count("graph_launch") == 1


def test_cuda_graph_capture_failure_falls_back(fake_trt, onnx_file, caplog):
    world = fake_trt(capture_fails=True)
    out = _build(onnx_file)
    x = _x()
    with engines.open(out, cuda_graph=True) as e:
        a, b = e.infer(x), e.infer(x)
        assert not e.cuda_graph_active and "capture failed" in e.describe()
    np.testing.assert_array_equal(a, b)
    assert world.calls.count(("begin_capture", 1)) == 1 and "graph_launch" not in world.calls
    assert any("CUDA graph capture failed" in r.getMessage() for r in caplog.records)


def test_cuda_graph_recaptured_after_a_shape_change(fake_trt, tmp_path):
    world = fake_trt()
    out = _build(_conv_model(tmp_path / "dyn.onnx", batch=None), batch=2)
    with engines.open(out, cuda_graph=True) as e:
        e.infer(_x(batch=1))
        e.infer(_x(batch=1))
        y = e.infer(np.full((2, 3, 4, 4), 3, np.float32))
        assert y.shape == (2, 2, 4, 4) and float(y.max()) == 9.0
    assert world.calls.count(("begin_capture", 1)) == 2


def test_cuda_graph_needs_cuda_python(monkeypatch, fake_trt, onnx_file):
    fake_trt()
    out = _build(onnx_file)
    monkeypatch.setattr(tensorrt_backend, "import_cudart", lambda: (_ for _ in ()).throw(
        MissingDependency("CUDA graphs need cuda-python")))
    with pytest.raises(MissingDependency, match="cuda-python"):
        engines.open(out, cuda_graph=True)
    with pytest.raises(UserError, match="unknown option"):
        engines.open(out, graphs=True)


def test_benchmark_engine_rows_with_a_cuda_graph(fake_trt, onnx_file):
    from engines import benchmark

    fake_trt()
    out = _build(onnx_file)
    rows = benchmark.run_benchmark([str(out)], benchmark.BenchmarkOptions(iters=3, warmup=1, cuda_graph=True,
                                                                          in_process=True))
    assert rows[0]["cuda_graph"] is True and rows[0]["gpu_p50_ms"] == 0.25 and rows[0]["device_memory_mib"] > 0
    manifest_path(out).unlink()
    rows = benchmark.run_benchmark([str(out)], benchmark.BenchmarkOptions(iters=1, in_process=True))
    assert "no manifest" in rows[0]["error"]


def test_cuda_graph_state_machine_and_launch_errors(fake_trt):
    world = fake_trt()
    import cuda.bindings.runtime as cudart

    runs = []

    def execute():
        capture = world.cuda.capturing.get(5)
        if capture is not None:
            capture.append(lambda: runs.append("replay"))
        else:
            runs.append("enqueue")
        return True

    g = CudaGraph(cudart, 5, execute=execute, synchronize=lambda: runs.append("sync"))
    assert g.run() and runs == ["enqueue", "sync"] and g.active
    assert g.run() and runs[-1] == "replay"
    g.reset()
    assert not g.active and "exec_destroy" in world.calls
    cudart.cudaGraphLaunch = lambda e, s: (700, None)
    g.run()
    with pytest.raises(CudaGraphError, match="cudaGraphLaunch failed"):
        g.run()
    assert CudaGraphError("x").exit_code == 2


# ------------------------------------------------------------------------------------------ child processes


def test_the_cli_builds_and_benchmarks_in_child_processes_on_the_fake(fake_trt, onnx_file, tmp_path):
    world = fake_trt("11.4.1")
    env = child_env(world)
    root = Path(__file__).resolve().parent.parent
    run = lambda *argv: subprocess.run([sys.executable, "-m", "cpnet", *argv], capture_output=True, text=True,
                                       env=env, cwd=root, timeout=300)  # noqa: E731
    r = run("build", str(onnx_file), "--no-progress", "--version-compatible")
    assert r.returncode == 0, r.stderr
    engine = Path(r.stdout.strip().splitlines()[-1])
    assert read_manifest(engine)["tensorrt"]["version"] == "11.4.1"
    r = run("benchmark", str(engine), "--iters", "2", "--warmup", "0", "--allow-host-code", "--in-process",
            "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row.get("error") is None and row["gpu_p50_ms"] == 0.25


def test_the_tensorrt_extras_name_one_cuda_major_each():
    """Defect 3.6: no bare `tensorrt` (11.x of the metapackage requires tensorrt_cu13) and cuda-python pinned to
    the driver's CUDA major (old setup.cfg: one [tensorrt] extra, tensorrt>=10.0, no cuda-python)."""
    import configparser

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    extras = cfg["options.extras_require"]

    def reqs(text):
        return {r.name: r for r in (Requirement(line.strip()) for line in text.splitlines()
                                    if line.strip() and not line.strip().startswith("#"))}

    assert "tensorrt" not in extras
    for major in (12, 13):
        r = reqs(extras[f"tensorrt-cu{major}"])
        assert set(r) == {f"tensorrt-cu{major}", "pycuda", "cuda-python"}
        assert r["cuda-python"].specifier.contains(f"{major}.9") and not r["cuda-python"].specifier.contains(
            f"{major + 1}.0")
