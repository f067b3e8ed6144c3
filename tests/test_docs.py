"""Every repository path the documentation names exists.

The documents: README.md, demo/README.md and every docs/*.md. The paths they name:

- a Markdown link target that is not a URL (``[text](demo/README.md)``); with ``#anchor`` (alone, or after
  a file) the document must have a heading with that anchor, as GitHub makes them;
- an inline code span (single backticks), and each word of a fenced block (commands, a layout), that has no
  whitespace, no placeholder characters (``* < > { } | $ [ ] ( ) = , ~``, or a ``:`` other than a ``::``
  test selector) and either contains a ``/`` or ends in a source or document suffix (.py .md .sh .cfg .toml
  .yaml .yml .txt). A trailing ``/`` (a folder) is allowed; with a ``::test_name`` selector the test file
  must also define that test.

Each is resolved against the repository root and against the document's own folder (a Markdown viewer
resolves links from the latter; demo/README.md names its neighbours by their bare names), and exists if
either holds it inside the repository. A bare file name (no ``/``, as in a section about one folder:
``preprocess.py`` under "cpnet/runtime/") exists if some file of the repository has that name.

Skipped, because commands write them or the reader supplies them: paths whose first part is an output
folder (``runs/``, ``data/``, ``drift/``, ``out/``, ``tb/``, ``export/``, ``report/``, ``checkpoints/``,
``stamps/``, ``logs/``, ``quickstart/``, ``frames/``), the files commands write into a run or report
(``report.md``, ``config.yaml``, ``classes.yaml``), virtual environments (``.venv*``), flags
(``-o/--output``), media types (``multipart/x-mixed-replace``, ``image/jpeg``), absolute paths, URLs, and
placeholders: any part written in capitals (``RUN/report``,
``CKPT.pth``, ``STEP.log``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "demo" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUFFIXES = (".py", ".md", ".sh", ".cfg", ".toml", ".yaml", ".yml", ".txt")
OUTPUT_ROOTS = {"runs", "data", "drift", "out", "tb", "export", "report", "checkpoints", "stamps", "logs",
                "quickstart", "frames"}
MEDIA_TYPES = {"application", "audio", "image", "multipart", "text", "video"}  # first part of a MIME type
OUTPUT_NAMES = {"report.md", "config.yaml", "classes.yaml"}  # files that commands write into a run or report
PLACEHOLDER = re.compile(r"[*<>{}|$\[\]()=,~]|(?<!:):(?!:)")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _is_placeholder(part: str) -> bool:
    stem = part.split(".")[0]
    return len(stem) > 1 and stem.isupper()


def named_paths(text: str) -> list[str]:
    """The repository paths a Markdown text names, by the rule in this module's docstring."""
    blocks = FENCE.findall(text)
    text = FENCE.sub("", text)
    found = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    words = [w.strip(",;.()") if w.endswith((",", ";", ")")) else w.lstrip("(") for b in blocks for w in b.split()]
    for span in CODE_SPAN.findall(text) + words:
        span = span.strip()
        if not span or any(c.isspace() for c in span) or PLACEHOLDER.search(span):
            continue
        path = span.split("::")[0]
        if not ("/" in path or path.endswith(SUFFIXES)) or path.startswith(("/", "-", ".venv", "http")):
            continue
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] in OUTPUT_ROOTS or parts[0] in MEDIA_TYPES or path in OUTPUT_NAMES or any(_is_placeholder(p) for p in parts):
            continue
        found.append(span)
    return found


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown text's headings: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)}


def _exists(doc: Path, name: str) -> bool:
    path, _, test = name.partition("::")
    path, _, anchor = path.partition("#")
    if not path:  # a link to a heading of the same document
        return anchor in anchors(doc.read_text())
    candidates = [ROOT / path, doc.parent / path]
    if "/" not in path.rstrip("/"):  # a bare file name, in a section about its folder: some file of that name
        candidates += sorted(p for p in ROOT.rglob(path) if ".git" not in p.parts)
    for target in candidates:
        target = target.resolve()
        if target.exists() and target.is_relative_to(ROOT):
            if anchor:
                return target.is_file() and anchor in anchors(target.read_text())
            return not test or re.search(rf"^\s*def {re.escape(test.split('[')[0])}\(", target.read_text(), re.M) is not None
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_path_the_documentation_names_exists(doc):
    missing = sorted({name for name in named_paths(doc.read_text()) if not _exists(doc, name)})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {', '.join(missing)}"


def test_the_path_rule_finds_paths_and_skips_outputs_and_placeholders():
    text = ("See `cpnet/export.py`, `tests/test_qdq.py::test_x`, [the demo](demo/README.md), `engines/backends/`; "
            "not `runs/quickstart/best.pt`, `RUN/report`, `model.int8.onnx`, `key.sub=value`, `cpnet train`, "
            "[a site](https://example.org/x.md), `auto|cpu`.\n```\nbash scripts/nothing_here.sh\n```\n")
    assert named_paths(text) == ["demo/README.md", "cpnet/export.py", "tests/test_qdq.py::test_x", "engines/backends/",
                                 "scripts/nothing_here.sh"]


def test_a_missing_path_and_a_missing_test_are_caught():
    doc = ROOT / "README.md"
    assert _exists(doc, "cpnet/export.py") and _exists(doc, "engines/backends/")
    assert not _exists(doc, "cpnet/onnx_runtime.py")
    assert not _exists(doc, "tests/test_docs.py::test_that_does_not_exist")
    assert _exists(doc, "tests/test_docs.py::test_a_missing_path_and_a_missing_test_are_caught")
    assert _exists(doc, "docs/results.md#demo-speed") and _exists(doc, "#the-main-job-cpnet-pipeline")
    assert not _exists(doc, "docs/results.md#no-such-heading") and not _exists(doc, "#no-such-heading")
