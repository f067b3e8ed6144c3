"""``python -m cpnet VERB ...``: the same front door as the ``cpnet`` command."""

import sys

try:
    from cpnet.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: the same one line and code as later
    sys.stderr.write("interrupted\n")
    sys.exit(130)

sys.exit(main())
