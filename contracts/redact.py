"""Credentials never printed or served: mask the user-info part of every URI in a text.

``http://user:password@mlflow:5000`` becomes ``http://***@mlflow:5000`` wherever it appears (a
settings value, an exception's text, a log line). Stdlib only: every component imports it.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")


def mask_credentials(text: str) -> str:
    """``text`` with the user-info of every ``scheme://user[:password]@host`` replaced by ***."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
