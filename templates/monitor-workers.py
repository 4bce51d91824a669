#!/usr/bin/env python3
"""monitor-workers.py: runs the monitor-workers binary that sits beside it.

scripts/install.sh puts this file where the kit's original monitor-workers.py
was, so every cron line, launchd job and habit that runs
`python monitor-workers.py --auto-restart --max-restarts 3 ...` runs the
binary with the same arguments. The original, if there was one, is kept as
monitor-workers.py.orig; `scripts/install.sh --uninstall <project>` puts it
back. Written for Python 3, and runs on Python 2 too (`python` may be either).
"""
import os
import sys

here = os.path.dirname(os.path.realpath(__file__))
binary = os.path.join(here, "monitor-workers")
try:
    # The binary finds the project from its own location, as the original did.
    os.execv(binary, [binary] + sys.argv[1:])
except OSError as error:
    sys.stderr.write(
        "monitor-workers.py: cannot run %s: %s; reinstall with scripts/install.sh\n"
        % (binary, error.strerror)
    )
    sys.exit(3)
