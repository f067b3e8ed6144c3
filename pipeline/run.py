"""``cpnet pipeline``: run every stage in order, skip what is fresh, keep a log per step, end on one screen.

See :mod:`pipeline` for why the steps run in this process, and :mod:`pipeline.steps` for what
each step reads and writes and when it is fresh.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from cpnet.runtime.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, CpnetError, UserError
from cpnet.runtime.files import check_output, lock_run_dir
from cpnet.runtime.log import get_logger

from . import steps

log = get_logger("pipeline")

#: Without a terminal, the latest line of a running step's log is repeated this often (seconds).
HEARTBEAT_SECONDS = 30.0


# ----------------------------------------------------------------------------- the machine


def machine_lines(threads: int | None) -> tuple[list[str], dict]:
    import torch

    from cpnet.runtime.machine import gemm_gflops, machine_line

    rate, _ = gemm_gflops(threads)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    used = threads or torch.get_num_threads()
    info = {"gemm_gflops": rate, "threads": used, "load": load, "machine": machine_line()}
    return [f"machine: {info['machine']}",
            f"GEMM: {rate:.0f} GFLOP/s FP32 (torch.matmul 1024x1024, {used} thread{'s' if used > 1 else ''}); "
            f"load average {load:.2f}"], info


# ----------------------------------------------------------------------------- one step


class _Ticker(threading.Thread):
    """While a step runs: on a terminal, its log's latest line, redrawn in place; otherwise that line again
    every HEARTBEAT_SECONDS when it changed (so a long training shows it is alive in `> log` too)."""

    def __init__(self, log_path: Path, stream, prefix: str, tty: bool):
        super().__init__(daemon=True)
        self.log_path, self.stream, self.prefix, self.tty = log_path, stream, prefix, tty
        self.stop = threading.Event()
        self.drawn = False

    def last_line(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def run(self) -> None:
        shown, period = "", 0.5 if self.tty else HEARTBEAT_SECONDS
        while not self.stop.wait(period):
            line = self.last_line()
            if not line or line == shown:
                continue
            shown = line
            try:
                if self.tty:
                    import shutil

                    width = shutil.get_terminal_size((100, 20)).columns - 1
                    self.stream.write("\r\033[K" + (self.prefix + line)[:width])
                    self.drawn = True
                else:
                    self.stream.write(f"{self.prefix}{line}\n")
                self.stream.flush()
            except (OSError, ValueError):
                return

    def finish(self) -> None:
        self.stop.set()
        self.join()
        if self.drawn:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r\033[K")
                self.stream.flush()


def _terminal_stream():
    """A stream to the pipeline's own stderr that survives the step's redirection of file descriptor 2
    (a duplicate of it), and whether it is a terminal; (None, False) when there is no such descriptor."""
    from cpnet.runtime.progress import is_terminal

    err = sys.stderr
    try:
        fd = err.fileno()
    except (AttributeError, OSError, ValueError):
        return None, False
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), is_terminal(err)


@contextlib.contextmanager
def redirected(log_path: Path):
    """Python's stdout/stderr and file descriptors 1 and 2 (native libraries' messages) into ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1, encoding="utf-8", errors="replace") as f:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = []
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(f.fileno(), fd)
            except OSError:
                pass
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = f
        try:
            yield f
        finally:
            with contextlib.suppress(Exception):
                f.flush()
            sys.stdout, sys.stderr = old
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def run_commands(step: steps.Step, log_path: Path, verbose: bool, quiet: bool) -> tuple[int, str]:
    """Run the step's work with everything it writes in ``log_path``; (exit code, the last error line)."""
    from cpnet.cli import VERBS, run_verb
    from cpnet.runtime import log as cpnet_log

    rc, error = EXIT_OK, ""
    with redirected(log_path) as f:
        try:
            if step.before is not None:
                step.before()
            for verb, argv in step.commands:
                f.write(f"$ cpnet {verb} {' '.join(_quote(a) for a in argv)}\n")
                try:
                    rc = run_verb(VERBS[verb], argv, prog=f"cpnet {verb}")
                except SystemExit as e:  # argparse
                    rc = e.code if isinstance(e.code, int) else 2
                if rc != EXIT_OK:
                    break
        except KeyboardInterrupt:
            f.write("interrupted\n")
            rc = EXIT_INTERRUPTED
        except Exception as e:  # noqa: BLE001 - a crash of the pipeline's own work: in the log, one line on screen
            from cpnet.runtime.errors import exit_code_of, first_line

            if hasattr(e, "exit_code"):
                f.write(f"error: {first_line(e, 2000)}\n")
            else:
                traceback.print_exc(file=f)
            rc, error = (exit_code_of(e) if hasattr(e, "exit_code") else EXIT_CHECK_FAILED), first_line(e)
    cpnet_log.setup(verbose=verbose, quiet=quiet)  # each verb set the level from its own flags
    if rc != EXIT_OK and not error:
        error = _last_error(log_path)
    return rc, error


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _last_error(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith(("error:", "gate:", "interrupted")) or "Error" in line:
            return line[len("error: "):] if line.startswith("error: ") else line
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------- the verb

DESCRIPTION = """The whole job in one command: data, training, evaluation, export, FP16/INT8, TensorRT checks and engines, the drift report, the demo.

Steps, in order: data, train, evaluate, export, fp16, int8, int8-cpu, check-trt10, check-trt11,
engines (where TensorRT and a GPU are; one "skipped: ..." line otherwise), report, demo (headless, on
a motion clip of a synthetic scene, or a clip of a user's validation images, saved). A step is skipped when its outputs are newer than its
inputs and its options are unchanged (a stamp per step in RUN_DIR/stamps); each step writes its own
log, RUN_DIR/logs/STEP.log. A failing step stops the pipeline with its name and log file; a gate that
trips (the FP16 drift limit, the pre-flight check, the drift report) does not stop it, and the
pipeline exits 1 at the end. The machine's FP32 GEMM rate is printed first, every step's time and an
end screen (paths, mIoU of each variant, drift, latency, demo FPS, what to run next) last."""

EXAMPLES = """cpnet pipeline                          # the quickstart, end to end (what scripts/quickstart.sh runs)
cpnet pipeline --from int8              # rerun int8 and every step after it
cpnet pipeline --only report            # rerun one step
cpnet pipeline --list                   # each step: fresh, or why it would run
cpnet pipeline train.iters=3000 -o runs/longer"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for training")
    p.add_argument("--config", default="quickstart", metavar="NAME|YAML",
                   help="the config to train (default quickstart)")
    cli_args.add_output(p, "run directory (default runs/<config name>)")
    p.add_argument("--data", metavar="DIR",
                   help="dataset folder (default: the config's data.root); the synthetic dataset is generated there")
    g = p.add_argument_group("synthetic data (configs with data.dataset=synthetic)")
    g.add_argument("--train-images", type=cli_args.positive_int, default=400, metavar="N", help="training images (default 400)")
    g.add_argument("--val-images", type=cli_args.positive_int, default=100, metavar="N", help="validation images (default 100)")
    g.add_argument("--image-size", type=cli_args.positive_int, metavar="PIXELS",
                   help="image side (default: the model input's longer side)")
    p.add_argument("--calib-images", type=cli_args.positive_int, metavar="N",
                   help="calibration images for fp16 and int8 (default: each command's own)")
    g = p.add_argument_group("which steps")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", choices=steps.STEP_NAMES, metavar="STEP",
                       help=f"rerun this step and every one after it ({', '.join(steps.STEP_NAMES)})")
    which.add_argument("--only", choices=steps.STEP_NAMES, metavar="STEP", help="rerun this step only")
    g.add_argument("--force", action="store_true", help="run every step, fresh or not")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a run (in -o) or a synthetic dataset (in --data) that the pipeline did not make; "
                        "without it they are refused, and only what the pipeline made is replaced")
    g.add_argument("--list", action="store_true", help="say for each step whether it is fresh, or why it would run; "
                                                       "run nothing")
    cli_args.add_runtime(p)


def make_plan(args) -> steps.Plan:
    from cpnet.config import load_config

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"{bad[0]!r} is not a key.sub=value override; the config is chosen with --config "
                        f"(e.g. --config {bad[0]})")
    cfg = load_config(args.config, args.overrides)
    synthetic = cfg.data.dataset == "synthetic"
    data = Path(args.data or cfg.data.root)
    if not synthetic and not data.is_dir():
        raise UserError(f"{data}: no such dataset folder (the config's dataset is {cfg.data.dataset}); pass --data DIR")
    size = args.image_size or max(cfg.crop_size)
    if size < 32:
        raise UserError(f"--image-size must be at least 32 (got {size})")
    return steps.Plan(config=args.config, name=cfg.name, overrides=tuple(args.overrides),
                  run=Path(args.output or Path("runs") / cfg.name), data=data, synthetic=synthetic,
                  train_images=args.train_images, val_images=args.val_images, image_size=size,
                  calib_images=args.calib_images, threads=args.threads, progress=not args.no_progress,
                  verbose=args.verbose, overwrite=args.overwrite)


def selected(args) -> list[str]:
    if args.only:
        return [args.only]
    if args.start:
        return list(steps.STEP_NAMES[steps.STEP_NAMES.index(args.start):])
    return list(steps.STEP_NAMES)


def _producer(path: Path, plan: steps.Plan, before: str) -> str | None:
    """The step before ``before`` that writes ``path`` (None when none does)."""
    for name in steps.STEP_NAMES[:steps.STEP_NAMES.index(before)]:
        try:
            if path in steps.make_step(name, plan).outputs:
                return name
        except Exception:  # noqa: BLE001
            continue
    return None


def check_inputs_exist(first: str, plan: steps.Plan) -> None:
    """With --from/--only, the first step's inputs must be there already: say which step makes a missing one."""
    step = steps.make_step(first, plan)
    if step.unavailable:
        return
    for inp in step.inputs:
        if not inp.exists():
            maker = _producer(inp, plan, first)
            how = f"run cpnet pipeline --from {maker}" if maker else "make it first"
            raise UserError(f"step {first} needs {inp}, which is missing; {how}")


def run(args) -> int:
    plan = make_plan(args)
    names = selected(args)
    forced = bool(args.only or args.start or args.force)
    if args.list:
        for name in steps.STEP_NAMES:
            step = steps.make_step(name, plan)
            why = step.unavailable and f"skipped: {step.unavailable}" or steps.stale_reason(step, plan)
            state = ("would run (chosen)" if name in names and forced else
                     f"would run: {why}" if why and name in names else "fresh" if not why else f"stale: {why}")
            print(f"{name:<12} {state}")
        return EXIT_OK
    if names != list(steps.STEP_NAMES):
        check_inputs_exist(names[0], plan)
    check_output(plan.run, kind="dir", what="run directory")
    check_owned(plan, names, forced)  # before the lock file is made: a refusal leaves nothing behind
    with lock_run_dir(plan.run):
        check_owned(plan, names, forced)  # again: another pipeline may have finished in between
        return run_steps(args, plan, names, forced)


def check_owned(plan: steps.Plan, names: list[str], forced: bool) -> None:
    """Before any work: what the steps would replace is the pipeline's own, or the user said --overwrite."""
    if "train" in names:
        steps.train_mode(plan)  # refuses a run the pipeline did not make
    if "data" in names and plan.synthetic:
        step = steps.make_step("data", plan)
        if forced or steps.stale_reason(step, plan):
            from cpnet.data.synthetic import check_target

            check_target(plan.data, overwrite="--overwrite" in step.commands[0][1])


def run_steps(args, plan: steps.Plan, names: list[str], forced: bool) -> int:
    from . import screen

    t_start = time.perf_counter()
    head, machine = machine_lines(args.threads)
    log.info(f"{plan.name} -> {plan.run} (data {plan.data}); steps: {', '.join(names)}"
             + ("" if not forced else f" ({'forced' if args.force else 'chosen'})"))
    for line in head:
        log.info(line)
    results: dict[str, dict] = {}
    code = EXIT_OK
    total = len(names)
    for i, name in enumerate(names, 1):
        step = steps.make_step(name, plan)
        tag = f"{i:>2}/{total} {name}"
        if step.unavailable:
            log.info(f"{tag}: skipped: {step.unavailable}")
            results[name] = {"state": "unavailable", "why": step.unavailable}
            continue
        why = "chosen" if forced else steps.stale_reason(step, plan)
        if why is None:
            stamp = steps.read_stamp(plan, name) or {}
            rc = int(stamp.get("rc", 0))
            gate = " (its gate failed then: exit 1 at the end)" if rc else ""
            log.info(f"{tag}: fresh, skipped (took {stamp.get('seconds', 0):.1f} s on {stamp.get('finished', '?')})"
                     f"{gate}")
            results[name] = {"state": "fresh", "seconds": stamp.get("seconds"), "rc": rc}
            if rc:
                code = EXIT_CHECK_FAILED
            continue
        log_path = plan.log_of(name)
        log.info(f"{tag}: {step.what} ({why}; log {log_path})")
        steps.write_stamp(step, plan, None, 0.0)  # running: what a kill -9 leaves says the pipeline made it
        stream, tty = _terminal_stream()
        ticker = _Ticker(log_path, stream, "        ", tty) if stream else None
        t0 = time.perf_counter()
        try:
            if ticker:
                ticker.start()
            rc, error = run_commands(step, log_path, args.verbose, args.quiet)
        finally:
            if ticker:
                ticker.finish()
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()
        seconds = time.perf_counter() - t0
        results[name] = {"state": "ran", "seconds": seconds, "rc": rc, "log": str(log_path)}
        passed = rc == EXIT_OK or (step.gate and rc == EXIT_CHECK_FAILED and all(o.exists() for o in step.outputs))
        if not passed:
            steps.write_stamp(step, plan, rc, seconds)  # not fresh (its rc), but still the pipeline's own outputs
        if rc == EXIT_INTERRUPTED:
            log.warning(f"{tag}: interrupted after {seconds:.1f} s (log {log_path}); rerun cpnet pipeline to go on")
            raise KeyboardInterrupt
        if passed:
            steps.write_stamp(step, plan, rc, seconds)
            if rc:
                code = EXIT_CHECK_FAILED
                log.warning(f"{tag}: gate failed in {seconds:.1f} s: {error} (log {log_path}); going on, "
                            f"exit 1 at the end")
            else:
                log.info(f"{tag}: done in {seconds:.1f} s")
            continue
        screen.print_screen(plan, results, machine, time.perf_counter() - t_start, rc, stopped_at=name)
        raise StepFailed(name, rc, error, log_path)
    screen.print_screen(plan, results, machine, time.perf_counter() - t_start, code)
    return code


class StepFailed(CpnetError):
    """A step failed: one line naming the step, its exit code, its error and its log; the step's own code."""

    def __init__(self, name: str, rc: int, error: str, log_path: Path):
        super().__init__(f"step {name} failed (exit {rc}): {error or 'see its log'}; log: {log_path}")
        self.exit_code = rc if rc in (1, 2, 3) else EXIT_CHECK_FAILED


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb("pipeline.run", argv)


if __name__ == "__main__":
    sys.exit(main())
