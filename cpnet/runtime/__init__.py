"""The artifact runtime every stage shares, and the deploy side's whole world.

- :mod:`.errors`: one exception root, one exit-code table;
- :mod:`.files`: atomic writes, sha256, output places checked before work;
- :mod:`.manifest`: the JSON beside every artifact, one schema constant, one builder per kind;
- :mod:`.preprocess`: the manifest-driven pre- and post-processing;
- :mod:`.ort`: the one ONNX Runtime session factory;
- :mod:`.backend`: the small interface every backend implements (the backends and their registry
  are in ``engines/backends/``);
- :mod:`.qdq_rules`: TensorRT's Q/DQ rules, the one rulebook ``cpnet int8`` places by and ``cpnet check`` lints by;
- :mod:`.compare`: logits of a candidate against a reference, one fixed set of metrics;
- :mod:`.options`: the small option dataclasses library functions take;
- :mod:`.log`: one logger per stage;
- :mod:`.device`: the one ``auto``/``cpu``/``cuda`` resolver.

Nothing here imports torch at module level: a deploy-only install (ONNX Runtime
or TensorRT, no PyTorch) runs the whole runtime. The names most callers need
are re-exported here.
"""

from .errors import CheckFailed, CpnetError, MissingDependency, UserError
from .files import atomic_path, atomic_save, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .manifest import SCHEMA, manifest_path, read_manifest, versions, write_manifest

__all__ = [
    "CheckFailed", "CpnetError", "MissingDependency", "UserError",
    "atomic_path", "atomic_save", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "sha256_file", "SCHEMA", "manifest_path", "read_manifest", "versions", "write_manifest",
]
