"""``python -m cpnet VERB ...``: the same front door as the ``cpnet`` command."""

import sys

from cpnet.cli import main

sys.exit(main())
