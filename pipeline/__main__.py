"""``python -m pipeline`` = ``cpnet pipeline``."""

import sys

from cpnet.cli import run_verb

if __name__ == "__main__":
    sys.exit(run_verb("pipeline.run", prog="python -m pipeline"))
