"""Regenerate a per-version name list (``names/trt-<major.minor>.json``) from a TensorRT bindings wheel.

    pip download --no-deps --only-binary=:all: --python-version 3.11 tensorrt-cu12-bindings==10.3.0 -d /tmp/w
    python tests/fake_tensorrt/extract_names.py /tmp/w/tensorrt_cu12_bindings-10.3.0-*.whl

The wheel (``tensorrt-cu12-bindings`` on PyPI, about 1 MB) holds the compiled pybind11 module
``tensorrt_bindings/tensorrt.so`` but not libnvinfer, so it does not import as shipped. Its only
undefined symbols outside Python and libc are nine C entry points (``createInferBuilder_INTERNAL``,
``createInferRuntime_INTERNAL``, ``createNvOnnxParser_INTERNAL``, ``initLibNvInferPlugins``, ...), which
module initialisation never calls. So this script compiles a stub library exporting those names
(returning NULL/0), gives it the SONAMEs the module needs (``readelf -d``: ``libnvinfer.so.10`` ...),
imports the module with the stubs on ``LD_LIBRARY_PATH`` in a child process, and writes what pybind11
registered: every public attribute of the classes in :data:`CLASSES` (``dir()``), every member of the
enums in :data:`ENUMS` (``__members__``) and the module's top-level names; ``python`` lists the functions
the wheel's ``tensorrt_bindings/__init__.py`` adds on top (``nptype``, ``volume``, ...; read with ``ast``). These are the names the
real library has, read from the real binary: no string matching (which confuses "INT8" with "UINT8").
Needs gcc and readelf (binutils); nothing of TensorRT runs but pybind11's class registration.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: the classes the fake models (what cpnet calls on), by their name in the tensorrt module
CLASSES = ("Logger", "ILogger", "Builder", "IBuilderConfig", "INetworkDefinition", "ITensor", "OnnxParser",
           "ParserError", "IOptimizationProfile", "ITimingCache", "Runtime", "ICudaEngine", "IExecutionContext",
           "EngineInspector", "IProgressMonitor", "IHostMemory")
#: the enums it uses
ENUMS = ("BuilderFlag", "DataType", "DeviceType", "HardwareCompatibilityLevel", "LayerInformationFormat",
         "MemoryPoolType", "NetworkDefinitionCreationFlag", "OnnxParserFlag", "ProfilingVerbosity",
         "TensorIOMode", "TensorLocation")

STUB_C = """
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *a, int b) { return NULL; }
void *createInferRefitter_INTERNAL(void *a, void *b, int c) { return NULL; }
void *createInferRuntime_INTERNAL(void *a, int b) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *a, void *b, int c) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *a, void *b, int c) { return NULL; }
void *getBuilderPluginRegistry(int a) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *a, const char *b) { return 0; }
"""

DUMP = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tensorrt", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
classes, enums = json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {"module": sorted(n for n in dir(m) if not n.startswith("_")),
       "classes": {c: sorted(n for n in dir(getattr(m, c)) if not n.startswith("_")) for c in classes if hasattr(m, c)},
       "enums": {e: list(getattr(m, e).__members__) for e in enums if hasattr(m, e)}}
print(json.dumps(out))
"""


def needed_nv_libraries(so: Path) -> list[str]:
    dyn = subprocess.run(["readelf", "-d", str(so)], check=True, capture_output=True, text=True).stdout
    return [n for n in re.findall(r"\[(lib[^\]]+)\]", dyn) if n.startswith("libnv")]


def extract(wheel: Path) -> dict:
    m = re.match(r"(tensorrt[_a-z0-9]*_bindings)-([0-9][^-]*)-", wheel.name)
    if not m:
        raise SystemExit(f"{wheel}: not a tensorrt-cuXX-bindings wheel name")
    package, version = m.group(1).replace("_", "-"), m.group(2)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel) as z:
            so_name = next(n for n in z.namelist() if re.fullmatch(r"tensorrt_bindings/tensorrt[^/]*\.so", n))
            z.extract(so_name, tmp)
            init = ast.parse(z.read("tensorrt_bindings/__init__.py"))
        python = sorted(n.name for n in init.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_"))
        so = tmp / so_name
        (tmp / "stub.c").write_text(STUB_C)
        for lib in needed_nv_libraries(so):
            subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{lib}", "-o", str(tmp / lib), str(tmp / "stub.c")],
                           check=True)
        res = subprocess.run([sys.executable, "-c", DUMP, str(so), json.dumps(CLASSES), json.dumps(ENUMS)],
                             capture_output=True, text=True, env={"LD_LIBRARY_PATH": str(tmp), "PATH": "/usr/bin"})
        if res.returncode:
            raise SystemExit(f"importing {so_name} with stub libraries failed:\n{res.stderr}")
        names = json.loads(res.stdout)
        names["python"] = python
    return {"tensorrt": version, "source": {"package": package, "version": version, "wheel": wheel.name,
                                            "sha256": sha, "file": so_name,
                                            "method": "tests/fake_tensorrt/extract_names.py: the module imported "
                                                      "against stub libnvinfer libraries; dir() of each class, "
                                                      "__members__ of each enum"},
            **names}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    for w in argv:
        data = extract(Path(w))
        major_minor = ".".join(data["tensorrt"].split(".")[:2])
        out = HERE / "names" / f"trt-{major_minor}.json"
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
