"""The TensorRT layer's logic paths against stand-in ``tensorrt`` / PyCUDA / cuda-python objects (no TensorRT here).

The stand-ins follow the documented Python API (trt.Builder, IBuilderConfig, OnnxParser, trt.Runtime with
``engine_host_code_allowed`` / ``DLA_core`` / ``num_DLA_cores``, ICudaEngine, IExecutionContext with
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, cudart's ``(error, value)`` tuples), and
misbehave the way the real ones do where it matters: a version-compatible plan does not deserialize unless
host code is allowed; ``set_input_shape`` returns False outside the profile; work enqueued while a stream is
capturing is recorded, not run. What they prove is our control flow, not TensorRT's behaviour: these paths
have never run on a real TensorRT here (the ``tensorrt``-marked tests in test_tensorrt.py do that).
"""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engines
from cpnet.runtime import MissingDependency, UserError, manifest_path, read_manifest, sha256_file, write_manifest
from engines import build_engine
from engines import trt as trtlayer
from engines.backends import tensorrt_backend

AMPERE = {"name": "Fake A100", "compute_capability": "8.0", "source": "fake"}
TURING = {"name": "Fake T4", "compute_capability": "7.5", "source": "fake"}


# ------------------------------------------------------------------------------------------ stand-ins


class FakeWorld:
    """Shared state of one test's stand-ins: call log, device memory, capture state, knobs."""

    def __init__(self, version="10.3.0", dynamic=False, runtime_dla_cores=2, capture_fails=False, loads=True,
                 prior=False):
        self.version, self.dynamic, self.runtime_dla_cores = version, dynamic, runtime_dla_cores
        self.prior = prior  # the engine has a second output, "prior" (a --with-prior export)
        self.capture_fails, self.loads = capture_fails, loads
        self.calls: list = []
        self.memory: dict[int, np.ndarray] = {}
        self.next_addr = 4096
        self.capturing: list | None = None
        self.executions = 0
        self.runtimes: list = []


def make_trt(world: FakeWorld):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = world.version

    class Logger:
        VERBOSE, WARNING = 4, 2

        def __init__(self, severity):
            self.min_severity = severity

    def init_libnvinfer_plugins(logger, namespace):
        world.calls.append("plugins")
        return True

    class IProgressMonitor:
        def __init__(self):
            pass

    class Config:
        def __init__(self):
            self.flags, self.cleared = set(), set()
            self.DLA_core, self.default_device_type = -1, "GPU"
            self.hardware_compatibility_level = "NONE"
            self.progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def set_flag(self, f):
            self.flags.add(f)

        def clear_flag(self, f):
            self.cleared.add(f)

        def create_timing_cache(self, data):
            return bytes(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"cache")

        def add_optimization_profile(self, profile):
            pass

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return types.SimpleNamespace(name="image", shape=(-1 if world.dynamic else 1, 3, 4, 4))

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            world.calls.append("build")
            meta = {"vc": "VERSION_COMPATIBLE" in config.flags, "hw": config.hardware_compatibility_level,
                    "dla": config.DLA_core if config.default_device_type == "DLA" else None}
            return b"PLAN" + json.dumps(meta).encode()

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def set_flag(self, f):
            pass

        def parse_from_file(self, path):
            world.calls.append("parse")
            return True

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False
            self.DLA_core = -1
            self.num_DLA_cores = world.runtime_dla_cores
            world.runtimes.append(self)

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            world.calls.append(("deserialize", self.engine_host_code_allowed, self.DLA_core))
            if not world.loads or not data.startswith(b"PLAN"):
                return None
            meta = json.loads(data[4:])
            if meta["vc"] and not self.engine_host_code_allowed:
                return None  # a version-compatible plan carries host code: refused unless allowed
            return Engine(meta)

    class Engine:
        device_memory_size_v2 = 1024

        def __init__(self, meta):
            self.meta = meta
            self.num_io_tensors = 3 if world.prior else 2

        def get_tensor_name(self, i):
            return ("image", "prior", "logits")[i] if world.prior else ("image", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            b = -1 if world.dynamic else 1
            return {"image": (b, 3, 4, 4), "prior": (b, 16, 16)}.get(name, (b, 2, 4, 4))

        def get_tensor_dtype(self, name):
            return "float"

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3, 4, 4), (2, 3, 4, 4), (2, 3, 4, 4)]

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            layers = [{"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [{"DataType": "Half"}]}]
            return types.SimpleNamespace(get_engine_information=lambda fmt: json.dumps({"Layers": layers}))

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.batch = engine, {}, 1

        def set_input_shape(self, name, shape):
            if not 1 <= shape[0] <= 2:
                return False
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name):
            return {"image": (self.batch, 3, 4, 4), "prior": (self.batch, 16, 16)}.get(name, (self.batch, 2, 4, 4))

        def set_tensor_address(self, name, addr):
            self.addr[name] = addr

        def _compute(self):
            world.executions += 1
            x = world.memory[self.addr["image"]].reshape(self.batch, 3, 4, 4)
            world.memory[self.addr["logits"]] = (x[:, :2] * 2.0).astype(np.float32).reshape(-1)
            if world.prior:  # row i of the prior: pixel i of channel 0, times 0.5
                x0 = x[:, 0].reshape(self.batch, 16, 1)
                world.memory[self.addr["prior"]] = np.repeat(x0 * 0.5, 16, axis=2).astype(np.float32).reshape(-1)

        def execute_async_v3(self, stream_handle):
            if world.capturing is not None:
                if world.capture_fails:
                    return False
                world.capturing.append(self._compute)  # recorded into the graph, not run
                return True
            self._compute()
            return True

    trt.Logger, trt.init_libnvinfer_plugins, trt.IProgressMonitor = Logger, init_libnvinfer_plugins, IProgressMonitor
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED=2)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32", FP16="FP16", VERSION_COMPATIBLE="VERSION_COMPATIBLE",
                                            GPU_FALLBACK="GPU_FALLBACK")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS",
                                                           SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY")
    trt.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM=0)
    trt.LayerInformationFormat = types.SimpleNamespace(JSON=1)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: np.float32
    return trt


def make_cuda(world: FakeWorld):
    class DevPtr(int):
        def free(self):
            world.memory.pop(int(self), None)

    def mem_alloc(nbytes):
        world.next_addr += 4096
        world.memory[world.next_addr] = np.zeros(nbytes // 4, np.float32)
        return DevPtr(world.next_addr)

    def htod(dev, host, stream):
        world.memory[int(dev)] = np.array(host, copy=True)

    def dtoh(host, dev, stream):
        host[:] = world.memory[int(dev)]

    class Stream:
        handle = 77

        def synchronize(self):
            pass

    class Event:
        def record(self, stream):
            pass

        def time_since(self, other):
            return 0.25

    return types.SimpleNamespace(pagelocked_empty=lambda n, dt: np.zeros(n, dt), mem_alloc=mem_alloc,
                                 memcpy_htod_async=htod, memcpy_dtoh_async=dtoh, Stream=Stream, Event=Event)


def make_cudart(world: FakeWorld):
    def begin(stream, mode):
        world.calls.append(("begin_capture", mode))
        world.capturing = []
        return (0,)

    def end(stream):
        ops, world.capturing = world.capturing, None
        return (0, ("graph", ops))

    def instantiate(graph, flags):
        return (0, ("exec", graph[1]))

    def launch(exec_, stream):
        world.calls.append("graph_launch")
        for op in exec_[1]:
            op()
        return (0,)

    return types.SimpleNamespace(
        cudaStreamCaptureMode=types.SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local"),
        cudaStreamBeginCapture=begin, cudaStreamEndCapture=end, cudaGraphInstantiate=instantiate,
        cudaGraphLaunch=launch, cudaGraphDestroy=lambda g: (0,), cudaGetLastError=lambda: (0,),
        cudaGraphExecDestroy=lambda e: world.calls.append("exec_destroy") or (0,))


@pytest.fixture
def fake(monkeypatch):
    """``fake(**knobs)`` installs stand-ins for tensorrt, PyCUDA and cuda-python; returns the FakeWorld."""

    def install(gpu=AMPERE, **knobs) -> FakeWorld:
        world = FakeWorld(**knobs)
        trt, cuda, cudart = make_trt(world), make_cuda(world), make_cudart(world)
        monkeypatch.setattr(trtlayer, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(trtlayer, "import_pycuda", lambda: cuda)
        monkeypatch.setattr(trtlayer, "import_cudart", lambda: cudart)
        monkeypatch.setattr(trtlayer, "gpu_info", lambda device=0: gpu)
        monkeypatch.setattr(trtlayer, "is_jetson", lambda: False)
        world.trt = trt
        return world

    return install


@pytest.fixture
def onnx_file(tmp_path):
    """A tiny conv model.onnx with the manifest cpnet export would write."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "W")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "W"], ["logits"], name="conv")], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    write_manifest(path, {"kind": "onnx", "precision": "fp32", "input_size": [4, 4], "classes": ["a", "b"],
                          "mean": [0, 0, 0], "std": [1, 1, 1], "sha256": sha256_file(path)})
    return path


def _build(onnx_file, **kw):
    opts = trtlayer.BuildOptions(onnx=str(onnx_file), timing_cache="", progress=False, **kw)
    return build_engine.build(opts)


def _deserializations(world):
    return [c for c in world.calls if isinstance(c, tuple) and c[0] == "deserialize"]


# ------------------------------------------------------------------------------------------ defect 1: building


def test_version_compatible_build_loads_with_host_code_allowed_and_is_written_after(fake, onnx_file):
    world = fake()
    out = _build(onnx_file, version_compatible=True)
    # the load check deserialized with the options the build options imply
    assert _deserializations(world) == [("deserialize", True, -1)]
    # plugins registered before parsing, and the engine loaded before anything was written
    assert world.calls.index("plugins") < world.calls.index("parse") < world.calls.index("build")
    m = read_manifest(out)
    assert out.name == "model.engine" and m["sha256"] == sha256_file(out)
    assert m["tensorrt"]["version_compatible"] is True and m["build_options"]["version_compatible"] is True
    assert m["layer_precisions"]["by_precision"] == {"fp16": 1}
    # and it opens: the manifest says version compatible, so the runtime allows host code again
    with engines.open(out) as e:
        assert e.infer(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 2, 4, 4)
    assert _deserializations(world)[-1] == ("deserialize", True, -1)


def test_deserialize_options_come_from_the_build_options():
    D = trtlayer.DeserializeOptions
    assert D.from_build_options(trtlayer.BuildOptions(onnx="m.onnx", version_compatible=True)) == D(True, None)
    assert D.from_build_options(trtlayer.BuildOptions(onnx="m.onnx", dla_core=1)) == D(False, 1)
    assert D.from_build_options(trtlayer.BuildOptions(onnx="m.onnx")) == D(False, None)
    # an old manifest without build_options: its tensorrt/device fields say the same
    assert D.from_manifest({"tensorrt": {"version_compatible": True}, "device": "dla:1"}) == D(True, 1)
    assert D.from_manifest(None) == D(False, None) and D.from_manifest(None, trusted=True) == D(True, None)


def test_a_plan_that_does_not_load_is_never_written(fake, onnx_file):
    world = fake(loads=False)
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
    assert out.read_bytes() == b"new" and not manifest_path(out).exists()  # refused when opened: no manifest


# ------------------------------------------------------------------------------------------ defect 2


def test_trt10_version_compatible_engine_opens_on_trt11(fake, onnx_file):
    fake(version="10.3.0")
    out = _build(onnx_file, version_compatible=True)
    world = fake(version="11.0.0")
    with engines.open(out) as e:
        assert e.infer(np.ones((1, 3, 4, 4), np.float32))[0, 0, 0, 0] == 2.0
    assert _deserializations(world) == [("deserialize", True, -1)]
    fake(version="11.0.0")
    plain = _build(onnx_file, output=str(onnx_file.with_name("plain.engine")))
    fake(version="11.1.0")
    with pytest.raises(UserError, match="engines do not move between TensorRT versions"):
        engines.open(plain)


# ------------------------------------------------------------------------------------------ defect 3: DLA core


def test_dla_engine_runs_on_the_core_it_was_built_for(fake, onnx_file):
    world = fake()
    out = _build(onnx_file, dla_core=1)
    assert out.name == "model.dla1.engine" and _deserializations(world) == [("deserialize", False, 1)]
    assert read_manifest(out)["device"] == "dla:1"
    with engines.open(out):
        pass
    assert _deserializations(world)[-1] == ("deserialize", False, 1) and world.runtimes[-1].DLA_core == 1
    fake(runtime_dla_cores=1)
    with pytest.raises(UserError, match="built for DLA core 1, but this device has 1 DLA core"):
        engines.open(out)


# ------------------------------------------------------------------------------------------ defect 6


def test_engine_bytes_checked_against_the_manifest_before_tensorrt_sees_them(fake, onnx_file):
    fake()
    out = _build(onnx_file)
    world = fake()
    out.write_bytes(out.read_bytes() + b" ")  # changed after the build
    with pytest.raises(UserError, match="does not match its manifest"):
        engines.open(out)
    assert _deserializations(world) == []


def test_engine_without_manifest_needs_trust(fake, onnx_file):
    fake()
    out = _build(onnx_file)
    manifest_path(out).unlink()
    world = fake()
    with pytest.raises(UserError, match="no manifest.*--trust-engine"):
        engines.open(out)
    assert _deserializations(world) == []
    with engines.open(out, trust_engine=True) as e:
        assert e.infer(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 2, 4, 4)
    assert world.calls.index("plugins") < world.calls.index(_deserializations(world)[0])


def test_set_input_shape_refusal_is_reported(fake, onnx_file):
    fake(dynamic=True)
    out = _build(onnx_file, batch=2)
    with engines.open(out) as e:
        assert e.infer(np.ones((2, 3, 4, 4), np.float32)).shape == (2, 2, 4, 4)
        with pytest.raises(UserError, match=r"refused input shape \(3, 3, 4, 4\).*\(1, 3, 4, 4\) to \(2, 3, 4, 4\)"):
            e.infer(np.ones((3, 3, 4, 4), np.float32))


def test_plugins_registered_once_per_tensorrt(fake):
    world = fake()
    logger = trtlayer.make_logger(world.trt)
    assert trtlayer.init_plugins(world.trt, logger) and trtlayer.init_plugins(world.trt, logger)
    assert world.calls.count("plugins") == 1


# ------------------------------------------------------------------------------------------ hardware compatibility


def test_hardware_compatibility_build_and_open(fake, onnx_file):
    fake(gpu=AMPERE)
    out = _build(onnx_file, hardware_compatibility="ampere+")
    assert read_manifest(out)["tensorrt"]["hardware_compatibility"] == "ampere+"
    assert json.loads(out.read_bytes()[4:])["hw"] == "AMPERE_PLUS"  # config.hardware_compatibility_level was set
    fake(gpu={"name": "Fake RTX 4090", "compute_capability": "8.9", "source": "fake"})
    with engines.open(out):  # another Ampere-or-newer GPU: fine
        pass
    fake(gpu=TURING)
    with pytest.raises(UserError, match="Ampere and newer GPUs"):
        engines.open(out)
    fake(gpu=TURING)
    with pytest.raises(UserError, match="needs a build GPU of sm 8.0"):
        _build(onnx_file, hardware_compatibility="ampere+", output=str(onnx_file.with_name("t4.engine")))


def test_hardware_compatibility_options():
    opts = trtlayer.BuildOptions(onnx="m.onnx", hardware_compatibility="ampere+", dla_core=0)
    with pytest.raises(UserError, match="does not apply to DLA"):
        trtlayer.validate_hardware_compatibility(opts, AMPERE, jetson=False)
    opts = trtlayer.BuildOptions(onnx="m.onnx", hardware_compatibility="ampere+")
    with pytest.raises(UserError, match="JetPack"):
        trtlayer.validate_hardware_compatibility(opts, {"name": "Orin", "compute_capability": "8.7"}, jetson=True)
    trtlayer.validate_hardware_compatibility(trtlayer.BuildOptions(onnx="m.onnx", hardware_compatibility="same-cc"),
                                             TURING, jetson=False)
    with pytest.raises(UserError, match="must be one of"):
        trtlayer.validate_hardware_compatibility(trtlayer.BuildOptions(onnx="m", hardware_compatibility="x"))


def test_manifest_check_relaxed_for_hardware_compatible_engines():
    m = {"tensorrt": {"version": "10.3.0", "hardware_compatibility": "ampere+"}, "gpu": AMPERE}
    ada = {"name": "Fake L4", "compute_capability": "8.9"}
    assert trtlayer.check_engine_manifest(m, "10.3.0", ada, "m.engine", jetson=False) == []
    with pytest.raises(UserError, match="sm 8.0"):
        trtlayer.check_engine_manifest(m, "10.3.0", TURING, "m.engine", jetson=False)
    with pytest.raises(UserError, match="JetPack"):
        trtlayer.check_engine_manifest(m, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}, "m.engine",
                                       jetson=True)
    same = {"tensorrt": {"version": "10.3.0", "hardware_compatibility": "same-cc"}, "gpu": AMPERE}
    assert trtlayer.check_engine_manifest(same, "10.3.0", dict(AMPERE, name="Fake A30"), "m.engine") == []
    with pytest.raises(UserError, match="sm 8.0"):
        trtlayer.check_engine_manifest(same, "10.3.0", ada, "m.engine")
    none = {"tensorrt": {"version": "10.3.0"}, "gpu": AMPERE}
    with pytest.raises(UserError):
        trtlayer.check_engine_manifest(none, "10.3.0", ada, "m.engine")


# ------------------------------------------------------------------------------------------ CUDA graphs


def test_cuda_graph_captured_once_then_replayed(fake, onnx_file):
    world = fake()
    out = _build(onnx_file)
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    with engines.open(out) as plain:
        ref = plain.infer(x)
    world.calls.clear()
    with engines.open(out, cuda_graph=True) as e:
        first = e.infer(x)  # runs, then captures (the capture itself computes nothing)
        assert e.cuda_graph_active and ("begin_capture", "thread-local") in world.calls
        assert world.calls.count("graph_launch") == 0
        second = e.infer(x + 1)
        third = e.infer(x)
        assert world.calls.count("graph_launch") == 2 and "CUDA graph" in e.describe()
    np.testing.assert_array_equal(first, ref)
    np.testing.assert_array_equal(third, ref)
    np.testing.assert_array_equal(second, (x + 1)[:, :2] * 2)
    assert "exec_destroy" in world.calls  # released on close


def test_prior_output_by_name_logits_first(fake, onnx_file):
    """An engine built from a --with-prior file: infer() is the logits, infer_all() every output by name."""
    fake(prior=True)
    parent = read_manifest(onnx_file)
    write_manifest(onnx_file, {**parent, "prior": {"name": "prior", "grid": [4, 4]}})
    out = _build(onnx_file)
    assert read_manifest(out)["prior"] == {"name": "prior", "grid": [4, 4]}  # the engine's manifest keeps it
    x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    with engines.open(out) as e:
        assert e.output_names == ["logits", "prior"]  # the engine lists prior first; logits still come first
        np.testing.assert_array_equal(e.infer(x), x[:, :2] * 2)
        both = e.infer_all(x)
        assert set(both) == {"logits", "prior"} and both["prior"].shape == (1, 16, 16)
        np.testing.assert_array_equal(both["prior"][0, :, 3], x[0, 0].reshape(-1) * 0.5)


def test_cuda_graph_capture_failure_falls_back(fake, onnx_file, caplog):
    world = fake(capture_fails=True)
    out = _build(onnx_file)
    x = np.ones((1, 3, 4, 4), np.float32)
    with engines.open(out, cuda_graph=True) as e:
        a, b = e.infer(x), e.infer(x)
        assert not e.cuda_graph_active and "capture failed" in e.describe()
    np.testing.assert_array_equal(a, b)
    assert world.calls.count(("begin_capture", "thread-local")) == 1 and "graph_launch" not in world.calls
    assert any("CUDA graph capture failed" in r.getMessage() for r in caplog.records)


def test_cuda_graph_recaptured_after_a_shape_change(fake, onnx_file):
    world = fake(dynamic=True)
    out = _build(onnx_file, batch=2)
    with engines.open(out, cuda_graph=True) as e:
        e.infer(np.ones((1, 3, 4, 4), np.float32))
        e.infer(np.ones((1, 3, 4, 4), np.float32))
        y = e.infer(np.full((2, 3, 4, 4), 3, np.float32))  # new buffers: the old graph is dropped
        assert y.shape == (2, 2, 4, 4) and float(y.max()) == 6.0
    assert world.calls.count(("begin_capture", "thread-local")) == 2


def test_cuda_graph_needs_cuda_python(monkeypatch, fake, onnx_file):
    fake()
    out = _build(onnx_file)
    monkeypatch.setattr(trtlayer, "import_cudart", lambda: (_ for _ in ()).throw(
        MissingDependency("CUDA graphs need cuda-python")))
    with pytest.raises(MissingDependency, match="cuda-python"):
        engines.open(out, cuda_graph=True)
    with pytest.raises(UserError, match="unknown option"):
        engines.open(out, graphs=True)


def test_benchmark_passes_engine_options():
    from cpnet.runtime.options import RuntimeOptions
    from engines import benchmark

    o = benchmark.BenchmarkOptions(iters=2, warmup=0, cuda_graph=True, trust_engine=True)
    assert benchmark.options_for("tensorrt", o) == {"cuda_graph": True, "trust_engine": True}
    assert benchmark.options_for("tensorrt", benchmark.BenchmarkOptions()) == {}
    rt = RuntimeOptions(device="cuda", threads=2, providers=("cuda", "cpu"))
    assert benchmark.options_for("onnxruntime", o, rt) == {"providers": "cuda,cpu", "threads": 2}
    assert benchmark.options_for("torch", benchmark.BenchmarkOptions(backend_options="precision=fp16"), rt) == {
        "precision": "fp16", "device": "cuda", "threads": 2}
    argv = benchmark._child_argv("m.engine", o)
    assert "--cuda-graph" in argv and "--trust-engine" in argv and "--device" not in argv
    assert tensorrt_backend.OPTIONS == ("verbose", "cuda_graph", "trust_engine")


def test_benchmark_engine_rows_with_a_cuda_graph(fake, onnx_file):
    from engines import benchmark

    fake()
    out = _build(onnx_file)
    rows = benchmark.run_benchmark([str(out)], benchmark.BenchmarkOptions(iters=3, warmup=1, cuda_graph=True,
                                                                          in_process=True))
    assert rows[0]["cuda_graph"] is True and rows[0]["gpu_p50_ms"] == 0.25 and rows[0]["device_memory_mib"] > 0
    manifest_path(out).unlink()
    rows = benchmark.run_benchmark([str(out)], benchmark.BenchmarkOptions(iters=1, in_process=True))
    assert "no manifest" in rows[0]["error"]


def test_cuda_graph_state_machine_and_launch_errors():
    world = FakeWorld()
    cudart = make_cudart(world)
    runs = []

    def execute():
        if world.capturing is not None:
            world.capturing.append(lambda: runs.append("replay"))
        else:
            runs.append("enqueue")
        return True

    g = trtlayer.CudaGraph(cudart, 5, execute=execute, synchronize=lambda: runs.append("sync"))
    assert g.run() and runs == ["enqueue", "sync"] and g.active  # warm-up enqueue, sync, then capture
    assert g.run() and runs[-1] == "replay"
    g.reset()
    assert not g.active and "exec_destroy" in world.calls
    cudart.cudaGraphLaunch = lambda e, s: (700, None)
    g.run()
    with pytest.raises(trtlayer.CudaGraphError, match="cudaGraphLaunch failed"):
        g.run()
    assert trtlayer.CudaGraphError("x").exit_code == 2
