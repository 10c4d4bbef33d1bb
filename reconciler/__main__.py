"""``python -m reconciler``."""

import signal
import sys

from reconciler.cli import main


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C: the apply lock is released."""
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _stop)
raise SystemExit(main())
