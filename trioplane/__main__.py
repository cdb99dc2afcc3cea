"""``python -m trioplane``: the ``trioplane`` command (:mod:`trioplane.cli`)."""

import sys

try:
    from trioplane.cli import main
except KeyboardInterrupt:  # Ctrl-C while importing: exit as the command would
    sys.exit(130)

sys.exit(main())
