"""The fake ``tensorrt`` module of one version: strict names, real dtypes, engines that compute.

Every class and enum takes its public names from the version's list (``names/trt-<major.minor>.json``,
read from NVIDIA's wheel): a name the real class lacks raises AttributeError on get and on set, as a
pybind11 object does, and the module has no top-level name the real one lacks. The fake implements a
subset of each list (what cpnet calls); ``tests/test_trt_fake.py`` checks that it implements no
name outside the lists.

A "plan" is the ONNX file's bytes behind a JSON header (version, GPU, flags, profile, I/O); an engine
runs it with ONNX Runtime on the bytes in (fake) device memory, read and written in the engine's own
I/O dtypes, so a buffer of the wrong dtype or size computes garbage or fails, as on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import threading
import types
from pathlib import Path

import numpy as np

from .names import load_names

MAGIC = b"FAKEPLAN"
CACHE_MAGIC = b"FAKETCACHE"
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 16: "BF16"}
_TRT_TO_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
              "BOOL": np.bool_, "UINT8": np.uint8}
PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")


class FakeMisuse(AssertionError):
    """Something the real library leaves undefined (one IExecutionContext run by two threads at once)."""


class EnumValue:
    __slots__ = ("enum", "name", "value")

    def __init__(self, enum: str, name: str, value: int):
        self.enum, self.name, self.value = enum, name, value

    def __int__(self):
        return self.value

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, EnumValue) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self):
        return hash((self.enum, self.value))

    def __repr__(self):
        return f"<{self.enum}.{self.name}: {self.value}>"


def make_enum(name: str, members: list[str]):
    values = {m: EnumValue(name, m, i) for i, m in enumerate(members)}
    cls = type(name, (), dict(values, __members__=dict(values), __module__="tensorrt"))
    return cls


class StrictType(type):
    """Names read on a class itself (``hasattr(trt.ICudaEngine, "device_memory_size")``, the usual way to probe a
    TensorRT version) limited to the real class's too, for the classes built from a names list."""

    def __getattribute__(cls, name):
        if not name.startswith("_"):
            allowed = type.__getattribute__(cls, "_allowed")
            if allowed and name not in allowed:
                trt_name = type.__getattribute__(cls, "_trt_name")
                raise AttributeError(f"type object 'tensorrt.tensorrt.{trt_name}' has no attribute '{name}'")
        return type.__getattribute__(cls, name)


class Strict(metaclass=StrictType):
    """Public attribute names limited to the real class's (``_allowed``), on get and on set (on the class too)."""

    _trt_name = "object"
    _allowed: frozenset = frozenset()

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.tensorrt.{type(self)._trt_name}' object has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"'tensorrt.tensorrt.{type(self)._trt_name}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def _header(data: bytes) -> tuple[dict, bytes] | None:
    data = bytes(data)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        return None
    n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
    try:
        head = json.loads(data[len(MAGIC) + 8:len(MAGIC) + 8 + n])
    except ValueError:
        return None
    return head, data[len(MAGIC) + 8 + n:]


def _pack(head: dict, body: bytes) -> bytes:
    h = json.dumps(head).encode()
    return MAGIC + len(h).to_bytes(8, "little") + h + body


def make_tensorrt(world) -> types.ModuleType:
    names = load_names(world.version)
    major = int(world.version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = world.version
    enums = {e: make_enum(e, m) for e, m in names["enums"].items()}
    DataType = enums["DataType"]

    def strict(impl, trt_name: str):
        cls = type(trt_name, (impl,), {"_trt_name": trt_name, "_allowed": frozenset(names["classes"][trt_name]),
                                        "__module__": "tensorrt"})
        return cls

    def log(severity: str, msg: str):
        world.trt_log.append((severity, msg))

    # --- logging, plugins ---------------------------------------------------------------------
    severity = make_enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class _ILogger(Strict):
        pass

    class _Logger(Strict):
        def __init__(self, min_severity=severity.WARNING):
            self.min_severity = min_severity

        def log(self, severity, msg):  # the bindings' argument names: a keyword call must match
            log(severity.name, msg)

    for sev_name, value in severity.__members__.items():
        setattr(_Logger, sev_name, value)
        setattr(_ILogger, sev_name, value)
    _Logger.Severity = _ILogger.Severity = severity

    def init_libnvinfer_plugins(logger, namespace):
        world.calls.append("plugins")
        return True

    class _IProgressMonitor:  # a pybind11 trampoline base: Python subclasses may add attributes
        def __init__(self):
            pass

    # --- builder side ---------------------------------------------------------------------------
    class _ITensor(Strict):
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class _INetworkDefinition(Strict):
        def __init__(self, flags: int):
            self._flags = int(flags)
            self._model = None
            self._inputs: list = []
            self._outputs: list = []

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_input(self, i):
            return self._inputs[i]

        def get_output(self, i):
            return self._outputs[i]

        @property
        def _strongly_typed(self):
            if major >= 11:
                return True  # 11.x: every network is strongly typed; the flag is ignored
            return bool(self._flags & (1 << int(enums["NetworkDefinitionCreationFlag"].STRONGLY_TYPED)))

    class _ParserError(Strict):
        def __init__(self, desc, node, node_name, op):
            self._d, self._n, self._nn, self._op = desc, node, node_name, op

        def desc(self):
            return self._d

        def node(self):
            return self._n

        def node_name(self):
            return self._nn

        def node_operator(self):
            return self._op

        def code(self):
            return 8  # ErrorCode.UNSUPPORTED_NODE

    class _OnnxParser(Strict):
        def __init__(self, network, logger):
            self._network = network
            self._errors: list = []
            self._flags: set = set()

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

        def set_flag(self, flag):
            if not isinstance(flag, EnumValue) or flag.enum != "OnnxParserFlag":
                raise TypeError("set_flag(): incompatible function arguments")
            self._flags.add(flag.name)

        def parse_from_file(self, model):
            import onnx

            if not isinstance(model, str):  # pybind11's std::string caster takes str only (not a Path)
                raise TypeError("parse_from_file(): incompatible function arguments")
            path = model
            world.calls.append("parse")
            model = onnx.load(str(path))
            for i, node in enumerate(model.graph.node):
                if node.op_type in world.unsupported_ops:
                    self._errors.append(_ParserError(f"No importer registered for op: {node.op_type}", i,
                                                     node.name, node.op_type))
            if self._errors:
                return False
            net = self._network
            net._model = model.SerializeToString()
            init = {t.name for t in model.graph.initializer}
            for vi, into in [(v, net._inputs) for v in model.graph.input if v.name not in init] + \
                    [(v, net._outputs) for v in model.graph.output]:
                tt = vi.type.tensor_type
                shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                into.append(_ITensor(vi.name, shape, getattr(DataType, _ONNX_TO_TRT.get(tt.elem_type, "FLOAT"))))
            net._has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
            net._fp16_weights = any(t.data_type == 10 for t in model.graph.initializer)
            net._nodes = [(n.name or f"node{i}", n.op_type) for i, n in enumerate(model.graph.node)]
            return True

    class _IOptimizationProfile(Strict):
        def __init__(self):
            self._shapes: dict = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's argument names
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
                # pyCore.cpp's opt_profile_set_shape: PY_ASSERT_RUNTIME_ERROR, this message
                raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
            self._shapes[input] = (lo, mid, hi)

        def get_shape(self, input):  # noqa: A002
            return [list(s) for s in self._shapes.get(input, ((), (), ()))]

    class _IHostMemory(bytes):  # buffer protocol, as pybind11's IHostMemory has it
        _trt_name = "IHostMemory"
        _allowed = frozenset(names["classes"]["IHostMemory"])
        __getattribute__ = Strict.__getattribute__

        @property
        def nbytes(self):
            return len(self)

    class _ITimingCache(Strict):
        def __init__(self, owner: dict, entries: dict):
            self._owner, self._entries = owner, dict(entries)

        def _matches(self, other_owner: dict) -> bool:
            return self._owner == other_owner

        def serialize(self):
            return _IHostMemory(CACHE_MAGIC + json.dumps({"owner": self._owner, "entries": self._entries}).encode())

        def combine(self, input_cache, ignore_mismatch):
            # NvInfer.h, ITimingCache::combine: a cache of another TensorRT version is skipped (false) whatever
            # ignoreMismatch says; one of another device needs ignoreMismatch and is then appended; entries that
            # conflict with this cache's are skipped
            if input_cache._owner.get("tensorrt") != self._owner.get("tensorrt"):
                return False
            if not input_cache._matches(self._owner) and not ignore_mismatch:
                return False
            for key, value in input_cache._entries.items():
                self._entries.setdefault(key, value)
            return True

        def reset(self):
            self._entries = {}
            return True

    def _owner():
        return {"tensorrt": world.version, "gpu": str(world.gpu["compute_capability"])}

    class _IBuilderConfig(Strict):
        def __init__(self):
            self._flags: set = set()
            self._pools: dict = {}
            self.builder_optimization_level = 3
            self.profiling_verbosity = enums["ProfilingVerbosity"].LAYER_NAMES_ONLY
            self.default_device_type = enums["DeviceType"].GPU
            self.DLA_core = -1
            self.hardware_compatibility_level = enums["HardwareCompatibilityLevel"].NONE
            self.progress_monitor = None
            self._profiles: list = []
            self._cache = None
            if "TF32" in enums["BuilderFlag"].__members__:
                self._flags.add("TF32")  # on by default, as in TensorRT

        def _flag(self, f):
            if not isinstance(f, EnumValue) or f.enum != "BuilderFlag":
                raise TypeError("incompatible function arguments: expected tensorrt.BuilderFlag")
            return f.name

        def set_flag(self, flag):
            self._flags.add(self._flag(flag))

        def clear_flag(self, flag):
            self._flags.discard(self._flag(flag))

        def get_flag(self, flag):
            return self._flag(flag) in self._flags

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[pool.name] = int(pool_size)

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            if not data:
                return _ITimingCache(_owner(), {})
            if not data.startswith(CACHE_MAGIC):
                log("ERROR", "Failed to deserialize the timing cache")
                return None
            d = json.loads(data[len(CACHE_MAGIC):])
            return _ITimingCache(d["owner"], d["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            if not cache._matches(_owner()):
                if not ignore_mismatch:
                    log("ERROR", "Timing cache was created by another TensorRT version or device")
                    return False
                cache = _ITimingCache(_owner(), {})  # entries of another TensorRT/GPU are not used
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class _Builder(Strict):
        def __init__(self, logger):
            self._logger = logger

        @property
        def num_DLA_cores(self):  # noqa: N802 - TensorRT's name
            return world.dla_cores

        @property
        def platform_has_fast_fp16(self):
            return True

        def create_network(self, flags=0):
            return _INetworkDefinition(flags)

        def create_builder_config(self):
            return _IBuilderConfig()

        def create_optimization_profile(self):
            return _IOptimizationProfile()

        def build_serialized_network(self, network, config):
            world.calls.append("build")
            err = self._refuse(network, config)
            if err:
                log("ERROR", err)
                return None
            if config.progress_monitor is not None:
                m = config.progress_monitor
                m.phase_start("Building engine", None, 1)
                m.step_complete("Building engine", 0)
                m.phase_finish("Building engine")
            if world.on_build is not None:
                world.on_build(network, config)
            if config._cache is not None:
                config._cache._entries[hashlib.sha256(network._model).hexdigest()[:16]] = "tactics"
            dla = config.DLA_core if config.default_device_type == enums["DeviceType"].DLA else None
            profile = None
            if config._profiles:
                profile = {k: [list(s) for s in v] for k, v in config._profiles[0]._shapes.items()}
            precision = ("Int8" if network._has_qdq else
                         "Half" if (network._fp16_weights or "FP16" in config._flags) else "Float")
            head = {"tensorrt": world.version, "gpu": str(world.gpu["compute_capability"]),
                    "vc": "VERSION_COMPATIBLE" in config._flags,
                    "hw": config.hardware_compatibility_level.name, "dla": dla, "profile": profile,
                    "io": [{"name": t.name, "input": True, "shape": list(t.shape), "dtype": t.dtype.name}
                           for t in network._inputs] +
                          [{"name": t.name, "input": False, "shape": list(t.shape), "dtype": t.dtype.name}
                           for t in network._outputs],
                    "flags": sorted(config._flags), "strongly_typed": network._strongly_typed,
                    "layers": [{"name": n, "op": op, "precision": precision,
                                "device": ("GPU" if dla is None or op in world.dla_gpu_ops else "DLA")}
                               for n, op in network._nodes]}
            return _IHostMemory(_pack(head, network._model))

        def _refuse(self, network, config) -> str | None:
            if world.build_fails:
                return "Builder failed while optimizing the network (fake: build_fails)"
            if network._strongly_typed:
                bad = sorted(config._flags & set(PRECISION_FLAGS))
                if bad:
                    return (f"BuilderFlag {', '.join(bad)} is not allowed for a strongly typed network "
                            f"(precision comes from the network)")
            dla = config.default_device_type == enums["DeviceType"].DLA
            if dla and config.hardware_compatibility_level.name != "NONE":
                return "Hardware compatibility is not supported for DLA"
            if dla and not 0 <= config.DLA_core < world.dla_cores:
                return f"DLA core {config.DLA_core} does not exist"
            if dla and "GPU_FALLBACK" not in config._flags:
                gpu = [n for n, op in network._nodes if op in world.dla_gpu_ops]
                if gpu:
                    return f"{gpu[0]} cannot run on DLA and GPU fallback is not enabled"
            dynamic = [t.name for t in network._inputs if any(d < 0 for d in t.shape)]
            shapes = config._profiles[0]._shapes if config._profiles else {}
            missing = [n for n in dynamic if n not in shapes]
            if missing:
                return f"Network has dynamic or shape inputs, but no optimization profile has been defined for {missing}"
            return None

    # --- runtime side ----------------------------------------------------------------------------
    def _runs_here(head: dict, runtime) -> str | None:
        from engines.trt.versions import version_compatible_runs  # the documented policy, in one place

        if head["vc"]:
            if not runtime.engine_host_code_allowed:
                return "engine contains host code (version compatible), but engine_host_code_allowed is false"
            if not version_compatible_runs(head["tensorrt"], world.version):
                return f"version-compatible engine of TensorRT {head['tensorrt']} does not run on {world.version}"
        elif head["tensorrt"] != world.version:
            return (f"The engine plan file is not compatible with this version of TensorRT, expecting library "
                    f"version {world.version} got {head['tensorrt']}")
        gpu_cc = str(world.gpu["compute_capability"])
        if head["hw"] == "AMPERE_PLUS":
            if tuple(map(int, gpu_cc.split("."))) < (8, 0):
                return "hardware-compatible engine needs an Ampere or newer GPU"
        elif head["gpu"] != gpu_cc:
            return f"The engine plan file is generated on an incompatible device (sm {head['gpu']}, this is {gpu_cc})"
        if head["dla"] is not None and runtime.DLA_core != head["dla"]:
            return f"engine built for DLA core {head['dla']} deserialized with DLA_core {runtime.DLA_core}"
        return None

    class _Runtime(Strict):
        def __init__(self, logger):
            self.engine_host_code_allowed = False
            self.DLA_core = -1
            world.runtimes.append(self)

        @property
        def num_DLA_cores(self):  # noqa: N802
            return world.dla_cores

        def deserialize_cuda_engine(self, serialized_engine):
            world.calls.append(("deserialize", self.engine_host_code_allowed, self.DLA_core))
            parsed = _header(serialized_engine) if world.loads else None
            if parsed is None:
                log("ERROR", "Deserialize the cuda engine failed (not a plan file)")
                return None
            head, body = parsed
            why = _runs_here(head, self)
            if why:
                log("ERROR", why)
                return None
            return _ICudaEngine(head, body)

    class _ICudaEngine(Strict):
        def __init__(self, head, model_bytes):
            import onnxruntime as ort

            self._head = head
            self._io = head["io"]
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self._session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

        def _t(self, name):
            for t in self._io:
                if t["name"] == name:
                    return t
            raise ValueError(f"no tensor named {name!r}")  # the real one logs an error and returns garbage

        @property
        def num_io_tensors(self):
            return len(self._io)

        @property
        def device_memory_size(self):
            return 1 << 20

        @property
        def device_memory_size_v2(self):
            return 1 << 20

        @property
        def num_optimization_profiles(self):
            return 1

        def get_tensor_name(self, index):
            return self._io[index]["name"]

        def get_tensor_mode(self, name):
            return enums["TensorIOMode"].INPUT if self._t(name)["input"] else enums["TensorIOMode"].OUTPUT

        def get_tensor_shape(self, name):
            return tuple(self._t(name)["shape"])

        def get_tensor_dtype(self, name):
            return getattr(DataType, self._t(name)["dtype"])

        def get_tensor_profile_shape(self, name, profile_index):
            prof = (self._head.get("profile") or {}).get(name)
            if prof is None:
                raise RuntimeError(f"{name} has no optimization profile")
            return [tuple(s) for s in prof]

        def create_execution_context(self):
            return _IExecutionContext(self)

        def create_engine_inspector(self):
            return _EngineInspector(self)

    class _EngineInspector(Strict):
        def __init__(self, engine):
            self._engine = engine

        def get_engine_information(self, format):  # noqa: A002
            if format != enums["LayerInformationFormat"].JSON:
                return "\n".join(layer["name"] for layer in self._engine._head["layers"])

            def tensor(name, precision):
                if major >= 11:  # "Format" and "DataType" (11.x inspector JSON)
                    return {"Name": name, "Location": "Device", "Format": "Row major linear", "DataType": precision}
                return {"Name": name, "Location": "Device", "Format/Datatype": f"Row major linear {precision}"}

            runs: list[list[dict]] = []  # consecutive layers on one device
            for layer in self._engine._head["layers"]:
                dev = layer.get("device", "GPU")
                if runs and runs[-1][0].get("device", "GPU") == dev == "DLA":
                    runs[-1].append(layer)
                else:
                    runs.append([layer])
            layers, previous = [], None
            for run in runs:
                first, last = run[0], run[-1]
                dev = first.get("device", "GPU")
                if previous is not None and previous != dev:  # a format change at every DLA/GPU boundary
                    name = f"Reformatting CopyNode for Input Tensor 0 to {first['name']}"
                    layers.append({"Name": name, "LayerType": "Reformat", "ParameterType": "Reformat",
                                   "Origin": "REFORMAT", "Inputs": [tensor(first["name"] + "_in", first["precision"])],
                                   "Outputs": [tensor(name + "_out", first["precision"])]})
                previous = dev
                if dev == "DLA":
                    name = "{ForeignNode[" + first["name"] + ("..." + last["name"] if len(run) > 1 else "") + "]}"
                    layers.append({"Name": name, "LayerType": "DLA", "Inputs": [tensor(name + "_in", first["precision"])],
                                   "Outputs": [tensor(name + "_out", last["precision"])]})
                    continue
                t = tensor(first["name"] + "_in", first["precision"])
                layers.append({"Name": first["name"], "LayerType": "CaskConvolution" if first["op"] == "Conv"
                               else first["op"], "Inputs": [t], "Outputs": [t]})
            key = "I/O Tensors" if major >= 11 else "Bindings"
            return json.dumps({"Layers": layers, key: [t["name"] for t in self._engine._io]})

    class _IExecutionContext(Strict):
        def __init__(self, engine):
            self._engine = engine
            self._addr: dict = {}
            self._shapes = {t["name"]: tuple(t["shape"]) for t in engine._io if t["input"]}
            self._busy = None  # (thread id, stream) from an enqueue until that stream is synchronized
            self._lock = threading.Lock()

        @property
        def engine(self):
            return self._engine

        def _enter(self, what):
            me = threading.get_ident()
            with self._lock:
                if self._busy is not None and self._busy[0] != me:
                    world.misuse.append(what)
                    raise FakeMisuse(f"IExecutionContext.{what} from a second thread while another thread's "
                                     f"execution on it has not been synchronized")

        def set_input_shape(self, name, shape):
            self._enter("set_input_shape")
            shape = tuple(int(d) for d in shape)
            prof = (self._engine._head.get("profile") or {}).get(name)
            want = tuple(self._engine._t(name)["shape"])
            if prof is not None:
                lo, _, hi = prof
                if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                    log("ERROR", f"set_input_shape: {shape} is outside the profile {lo}..{hi}")
                    return False
            elif shape != want:
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            t = self._engine._t(name)
            if t["input"]:
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0] if self._shapes else 1
            return tuple(batch if d < 0 else d for d in t["shape"])

        def set_tensor_address(self, name, memory):
            self._enter("set_tensor_address")
            self._engine._t(name)
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self._addr.get(name, 0)

        def _compute(self):
            state = world.cuda
            feeds = {}
            for t in self._engine._io:
                if t["input"]:
                    shape = self._shapes[t["name"]]
                    dt = np.dtype(_TRT_TO_NP[t["dtype"]])
                    nbytes = int(np.prod(shape)) * dt.itemsize
                    raw = state.region(self._addr[t["name"]], nbytes, "execute_async_v3")
                    feeds[t["name"]] = np.frombuffer(bytes(raw[:nbytes]), dt).reshape(shape)
            world.executions += 1
            outs = self._engine._session.run(None, feeds)
            names = [o.name for o in self._engine._session.get_outputs()]
            for name, value in zip(names, outs):
                t = self._engine._t(name)
                value = np.ascontiguousarray(value.astype(_TRT_TO_NP[t["dtype"]], copy=False))
                state.region(self._addr[name], value.nbytes, "execute_async_v3")[:value.nbytes] = value.tobytes()

        def execute_async_v3(self, stream_handle):
            self._enter("execute_async_v3")
            state = world.cuda
            ctx = state.current()
            if ctx is not None and not ctx.primary:
                log("ERROR", "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource handle)")
                return False
            missing = [t["name"] for t in self._engine._io if t["name"] not in self._addr]
            if missing:
                log("ERROR", f"IExecutionContext::enqueueV3: Error Code 3: tensor addresses not set for {missing}")
                return False
            with self._lock:
                self._busy = (threading.get_ident(), int(stream_handle))
            world.pending.setdefault(int(stream_handle), []).append(self)
            capture = state.capturing.get(int(stream_handle))
            if capture is not None:
                if world.capture_fails:
                    return False
                capture.append(self._compute)  # recorded into the graph, not run
                return True
            self._compute()
            return True

        def _synchronized(self):
            with self._lock:
                self._busy = None

    def nptype(trt_type):
        mapping = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                   DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
                   DataType.UINT8: np.uint8}
        if trt_type in mapping:
            return mapping[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    def volume(iterable):
        v = 1
        for d in iterable:
            v *= d
        return v

    public = {
        "Logger": strict(_Logger, "Logger"), "ILogger": strict(_ILogger, "ILogger"),
        "IProgressMonitor": _IProgressMonitor, "Builder": strict(_Builder, "Builder"),
        "IBuilderConfig": strict(_IBuilderConfig, "IBuilderConfig"),
        "INetworkDefinition": strict(_INetworkDefinition, "INetworkDefinition"),
        "ITensor": strict(_ITensor, "ITensor"), "OnnxParser": strict(_OnnxParser, "OnnxParser"),
        "ParserError": strict(_ParserError, "ParserError"),
        "IOptimizationProfile": strict(_IOptimizationProfile, "IOptimizationProfile"),
        "ITimingCache": strict(_ITimingCache, "ITimingCache"), "IHostMemory": _IHostMemory,
        "Runtime": strict(_Runtime, "Runtime"), "ICudaEngine": strict(_ICudaEngine, "ICudaEngine"),
        "IExecutionContext": strict(_IExecutionContext, "IExecutionContext"),
        "EngineInspector": strict(_EngineInspector, "EngineInspector"),
        "init_libnvinfer_plugins": init_libnvinfer_plugins, "nptype": nptype, "volume": volume,
        "float32": DataType.FLOAT, "float16": DataType.HALF, "int8": DataType.INT8, "int32": DataType.INT32,
        "bool": DataType.BOOL, **enums,
    }
    # the classes refer to each other by their implementation names; give them the strict ones
    _INetworkDefinition, _ITensor, _OnnxParser = public["INetworkDefinition"], public["ITensor"], public["OnnxParser"]
    _ParserError, _IOptimizationProfile = public["ParserError"], public["IOptimizationProfile"]
    _ITimingCache, _IBuilderConfig = public["ITimingCache"], public["IBuilderConfig"]
    _ICudaEngine, _IExecutionContext = public["ICudaEngine"], public["IExecutionContext"]
    _EngineInspector = public["EngineInspector"]
    module_names = set(names["module"]) | set(names["python"])
    for k, v in public.items():
        if k in module_names:  # never a top-level name the real module lacks
            setattr(trt, k, v)
    trt._fake_world = world
    return trt


def plan_header(data: bytes) -> dict | None:
    """The JSON header of a fake plan (tests read what the builder was asked for)."""
    parsed = _header(data)
    return parsed[0] if parsed else None


def cache_entries(path: "str | Path") -> dict:
    data = Path(path).read_bytes()
    return json.loads(data[len(CACHE_MAGIC):])["entries"]
