"""``cpnet pipeline``: the whole job in one command, on top of every stage.

    cpnet pipeline                       # data, train, evaluate, export, fp16, int8, int8-cpu, check-trt10,
                                         # check-trt11, engines, report, demo; fresh steps are skipped
    cpnet pipeline --from int8           # rerun int8 and everything after it
    cpnet pipeline --only report         # rerun one step

This package is the last stage: it runs every other one and nothing imports it.
Each step is a list of ``cpnet VERB ...`` command lines run through the front door
(:func:`cpnet.cli.run_verb`, by verb name), in this process, with its stdout, stderr
and the native libraries' output (file descriptors 1 and 2) sent to the step's log
file. In-process rather than one ``python -m cpnet`` per step because importing
torch, ONNX, ONNX Runtime and OpenCV again for each of twelve steps costs 3-10 s a
step on a slow 2-core machine (a minute of a 12-minute budget), and the verbs are
built for it: they raise instead of exiting, log to whatever ``sys.stderr`` is, and
show progress as plain lines when it is not a terminal (:mod:`cpnet.runtime.progress`).

- :mod:`pipeline.steps`: the steps, their inputs, outputs and options, and the stamps that
  decide when a step is fresh;
- :mod:`pipeline.run`: the verb (arguments, the loop over steps, per-step logs, the exit code);
- :mod:`pipeline.screen`: the end screen (paths, headline figures, commands, step times).
"""
