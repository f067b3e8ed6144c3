"""The ``cpnet`` command: one front door, one grammar, one error policy for every stage.

    cpnet VERB INPUT [options] [key=value ...]

Each verb is a module with ``DESCRIPTION`` (its first line is the summary
``cpnet --help`` lists), ``EXAMPLES``, ``add_arguments(parser)`` and
``run(args) -> int``; the verb's ``python -m`` form calls :func:`run_verb` on the
same module, so both forms share one parser. Verbs are named here by module
path and imported only when run, so this table names later stages without
importing them, and a missing optional stage is one line, not a traceback.

Errors follow :mod:`cpnet.runtime.errors`: one line on stderr, the exit code
from its table (0 ok, 1 a check or gate failed, 2 a user error, 3 a missing
optional dependency, 130 interrupted).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import Sequence

from cpnet.runtime.errors import (EXIT_CODES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, CpnetError, UserError,
                                  MissingDependency, first_line)

#: The order is the pipeline's.
VERBS: dict[str, str] = {  # verb -> module
    "data": "cpnet.data.synthetic",
    "summary": "cpnet.summary",
    "convert": "cpnet.convert",
    "train": "cpnet.train",
    "evaluate": "cpnet.evaluate",
    "export": "cpnet.export",
    "fp16": "quantize.fp16",
    "int8": "quantize.int8",
    "sensitivity": "quantize.sensitivity",
    "report": "engines.report.report",
    "check": "engines.check",
    "build": "engines.build_engine",
    "inspect": "engines.inspection",
    "compare": "engines.compare",
    "benchmark": "engines.benchmark",
    "demo": "demo.webcam",
    "pipeline": "pipeline.run",
    "doctor": "pipeline.doctor",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that say what to do, and close-match suggestions for unknown flags."""

    def error(self, message: str):  # noqa: D401 - argparse's API
        hint = ""
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            known = [s for a in self._actions for s in a.option_strings]
            for word in unknown:
                match = difflib.get_close_matches(word.split("=")[0], known, n=1)
                if match:
                    hint = f"; did you mean {match[0]}?"
                    break
        sys.stderr.write(f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")
        sys.exit(EXIT_USER_ERROR)


#: Which extra of setup.cfg brings a module a verb may import (the base install is the deploy side).
EXTRAS = {"torch": "train", "tensorboard": "train", "onnxslim": "train", "cityscapesscripts": "train",
          "cv2": "desktop] or [headless", "tensorrt": "tensorrt", "pycuda": "tensorrt"}


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise CpnetError(f"{name} is not part of this installation; reinstall cpnet with the stage you need") from None
        top = (e.name or "").split(".")[0]
        if top in EXTRAS:
            verb = next((v for v, m in VERBS.items() if m == name), name)
            raise MissingDependency(f"cpnet {verb} needs {top}, which this installation lacks: "
                                    f"pip install -e '.[{EXTRAS[top]}]'") from None
        raise


def build_parser(module, prog: str) -> Parser:
    description = module.DESCRIPTION.strip()
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in module.EXAMPLES.strip().splitlines())
    p = Parser(prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(p)
    g = p.add_argument_group("messages")
    g.add_argument("-v", "--verbose", action="store_true", help="more detail in the log (debug level)")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


#: Set by the front door's signal handlers when Ctrl-C or SIGTERM arrives (see _terminate_like_interrupt).
_stop_requested = False


def guarded(fn, *args) -> int:
    """Run ``fn(*args)`` under the error policy: one line on stderr and the exit code from the table."""
    try:
        return int(fn(*args) or EXIT_OK)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as e:
        if _stop_requested:
            # Ctrl-C inside a native library (an extension module's initialisation, most often while
            # `import torch` runs) comes back as that library's own error ("ImportError: initialization
            # failed"): it is still the user's interrupt, and gets the interrupt's line and code.
            sys.stderr.write("interrupted\n")
            return EXIT_INTERRUPTED
        if isinstance(e, CpnetError):
            sys.stderr.write(f"error: {first_line(e, 2000)}\n")
            return e.exit_code
        if isinstance(e, BrokenPipeError):  # `cpnet summary | head`
            return EXIT_OK
        if isinstance(e, OSError):  # a full disk (or ulimit -f) met by a writer that is not ours (TensorBoard)
            from cpnet.runtime.files import disk_full_error, is_disk_full

            if is_disk_full(e):
                sys.stderr.write(f"error: {first_line(disk_full_error(e.filename or 'a file', e), 2000)}\n")
                return EXIT_USER_ERROR
        raise


def run_verb(module_name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` with the verb's parser and run it under the error policy (the ``python -m`` forms)."""
    from cpnet.runtime import log

    if module_name == "__main__":  # `python -m cpnet.export`: the module's real name, for its parser and errors
        module_name = getattr(sys.modules["__main__"].__spec__, "name", None) or module_name

    def go() -> int:
        module = _module(module_name)
        parser = build_parser(module, prog or f"python -m {module_name}")
        args = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
        log.setup(verbose=args.verbose, quiet=args.quiet)
        check_utf8_arguments(args)
        check_outputs_apart(args)
        return module.run(args)

    if argv is None:  # the program itself (`python -m cpnet.export`), not a caller
        _terminate_like_interrupt()
    return guarded(go)


#: The flags every verb names the same way (cpnet/cli/args.py): what a verb reads, what it writes.
INPUT_FLAGS = {"input": "input", "source": "source", "reference": "reference", "variants": "variant"}
OUTPUT_FLAGS = {"output": "output (-o)", "json": "--json file"}


def check_utf8_arguments(args) -> None:
    """Every argument is UTF-8 text: a path given in bytes of another encoding (``-o $'\\xff.mp4'``) would crash
    OpenCV or the UTF-8 files that record it (report, config, manifest), so it is refused before any work
    (:func:`cpnet.runtime.files.utf8_path`; names found inside folders are checked where they are read)."""
    from cpnet.runtime.files import utf8_path

    for dest, value in vars(args).items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, str):
                utf8_path(v, what=dest.replace('_', '-'))


def check_outputs_apart(args) -> None:
    """No output may be an input or another output (``cpnet demo m --source v.mp4 -o v.mp4``): refused before
    any work. A folder given as both input and output (a report into its run directory) writes beside the
    input, not over it, and passes."""
    from cpnet.runtime.files import check_distinct

    inputs = []
    for flag, what in INPUT_FLAGS.items():
        value = getattr(args, flag, None)
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, str) and v and not os.path.isdir(v):
                inputs.append((what, v))
    outputs = [(what, getattr(args, flag, None)) for flag, what in OUTPUT_FLAGS.items()
               if isinstance(getattr(args, flag, None), str)]
    for what, path in outputs:  # an artifact's manifest is part of it (an input's, or another artifact's)
        if path.lower().endswith(".json") and os.path.isfile(path[:-len(".json")]):
            raise UserError(f"{path}: the {what} would overwrite the manifest of {path[:-len('.json')]}; "
                            f"choose another output path")
    check_distinct(inputs, outputs)
    for what, path in outputs:
        check_not_theirs(path, what)


#: Files cpnet writes with a manifest beside them: an existing one without it was not made by cpnet.
ARTIFACT_SUFFIXES = (".onnx", ".pt", ".engine", ".plan", ".trt")


def check_not_theirs(path: str, what: str) -> None:
    """An existing file at an output path is replaced only when it can be cpnet's own: an artifact with its
    manifest beside it, or a JSON document at a .json path. Anything else (a user's notes under that name, an
    engine trtexec built) is refused before any work, naming the file."""
    if not os.path.isfile(path):
        return
    if path.lower().endswith(ARTIFACT_SUFFIXES) and not os.path.isfile(path + ".json"):
        raise UserError(f"{path}: the {what} exists and is not a file cpnet made (no manifest beside it); move it "
                        f"or choose another output path")
    if path.lower().endswith(".json"):
        import json

        try:
            with open(path, "rb") as f:
                json.load(f)
        except (ValueError, OSError):
            raise UserError(f"{path}: the {what} exists and is not JSON, so not a file cpnet wrote; move it or "
                            f"choose another output path") from None


def summary_of(module_name: str) -> str:
    try:
        return _module(module_name).DESCRIPTION.strip().splitlines()[0]
    except Exception as e:  # a broken optional stage must not break `cpnet --help`
        return f"(unavailable: {first_line(e, 80)})"


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: cpnet VERB [INPUT] [options]", "", "Context Prior Network, from training to the edge.", "",
             "verbs, in pipeline order:"]
    lines += [f"  {name:<{width}}  {summary_of(module)}" for name, module in VERBS.items()]
    lines += ["", "cpnet VERB --help shows what a verb does, an example and every flag.", "", "exit codes:"]
    lines += [f"  {code:<3}  {text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


def dispatch(verbs: dict[str, str], argv: list[str], prog: str) -> int:
    """Run ``argv[0]`` of ``verbs`` with the rest of ``argv``; an unknown verb gets a close-match suggestion."""
    verb, rest = argv[0], argv[1:]
    if verb not in verbs:
        match = difflib.get_close_matches(verb, verbs, n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        sys.stderr.write(f"{prog}: error: unknown verb {verb!r}{hint} (verbs: {', '.join(verbs)}; "
                         f"see {prog} --help)\n")
        return EXIT_USER_ERROR
    return run_verb(verbs[verb], rest, prog=f"{prog} {verb}")


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None  # the cpnet command itself, not a caller passing arguments
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return EXIT_OK if argv else EXIT_USER_ERROR
    if argv[0] == "--version":
        from cpnet import __version__

        print(f"cpnet {__version__}")
        return EXIT_OK
    if as_program:
        _terminate_like_interrupt()
    code = dispatch(VERBS, argv, "cpnet")
    if as_program:
        if code == EXIT_INTERRUPTED:  # skip the interpreter's teardown: a half-imported library (Ctrl-C landed
            sys.stdout.flush()        # inside `import torch`) can raise again from its exit handlers
            sys.stderr.flush()
            os._exit(code)
        _ignore_interrupts_while_exiting()
    return code


def _terminate_like_interrupt() -> None:
    """SIGTERM (kill, systemd, a container stopping) ends a command as Ctrl-C does: the demo finishes its
    video, temporary files are removed, training says how to resume; exit 130."""
    import signal

    from cpnet.runtime.errors import Terminated

    def handler(signum, frame):
        global _stop_requested
        _stop_requested = True
        raise Terminated("SIGTERM")

    def interrupt(signum, frame):  # Python's own Ctrl-C handler, remembering that it ran
        global _stop_requested
        _stop_requested = True
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the caller ignores it
            signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread
        pass


def _ignore_interrupts_while_exiting() -> None:
    """The work is done and the outputs are in place: a Ctrl-C now would only tear the interpreter's
    shutdown apart (native libraries' destructors abort on it), so it is ignored."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


if __name__ == "__main__":
    sys.exit(main())
