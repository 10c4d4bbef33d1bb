"""``python -m sidecar``: see :mod:`sidecar.cli`."""

from sidecar.cli import main

raise SystemExit(main())
