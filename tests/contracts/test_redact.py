"""Credentials in URIs are masked wherever a text is printed or served."""

from __future__ import annotations

import pytest

from contracts.redact import mask_credentials


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:s3cret@mlflow:5000", "http://***@mlflow:5000"),
        ("https://token@host/api", "https://***@host/api"),
        (
            "HTTPConnectionPool: 'http://a:b@h:1/x' failed; retry postgresql+psycopg2://u:p@db/m",
            "HTTPConnectionPool: 'http://***@h:1/x' failed; retry postgresql+psycopg2://***@db/m",
        ),
        ("http://mlflow:5000/api", "http://mlflow:5000/api"),
        ("no uri here: a@b", "no uri here: a@b"),
    ],
)
def test_userinfo_is_masked(text: str, expected: str) -> None:
    assert mask_credentials(text) == expected
    assert "s3cret" not in mask_credentials(text)
