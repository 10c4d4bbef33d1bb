"""Webhook signatures: the format MLflow 3.17 really sends, stale and forged deliveries."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from sidecar.webhook import WebhookRejectedError, sign, verify

SECRET = "s3cr3t"
BODY = json.dumps(
    {"entity": "model_version_tag", "action": "set", "timestamp": "2026-01-01T00:00:00+00:00",
     "data": {"name": "iris", "version": "3", "key": "mlgitops.stage", "value": "Production"}}
)  # fmt: skip


def headers(*, secret: str = SECRET, body: str = BODY, age: float = 0) -> dict[str, str]:
    delivery_id = str(uuid.uuid4())
    timestamp = str(int(time.time() - age))
    return {
        "x-mlflow-delivery-id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, timestamp, body),
    }


def test_our_signature_is_mlflows() -> None:
    assert sign(SECRET, "d", "17", BODY.encode()) == _generate_hmac_signature(
        SECRET, "d", "17", BODY
    )


def test_a_delivery_signed_by_mlflow_is_accepted_and_names_the_model() -> None:
    delivery = verify(SECRET, headers(), BODY.encode(), now=time.time(), max_age=300)
    assert (delivery.model, delivery.version) == ("iris", "3")
    assert (delivery.entity, delivery.action) == ("model_version_tag", "set")


@pytest.mark.parametrize(
    ("make", "body", "reason"),
    [
        (lambda: headers(secret="other"), BODY, "signature"),
        (headers, BODY.replace("iris", "evil"), "signature"),
        (lambda: headers(age=3600), BODY, "timestamp"),
        (lambda: headers(age=-3600), BODY, "timestamp"),
        (
            lambda: {k: v for k, v in headers().items() if k != "X-MLflow-Signature"},
            BODY,
            "missing",
        ),
        (lambda: {**headers(), "X-MLflow-Timestamp": "yesterday"}, BODY, "unix seconds"),
        # compare_digest raised TypeError on a non-ASCII str (a 500, found by a tester):
        (lambda: {**headers(), "X-MLflow-Signature": "v1,\u00e9"}, BODY, "signature"),
    ],
    ids=[
        "wrong-secret",
        "altered-body",
        "stale",
        "future",
        "unsigned",
        "bad-timestamp",
        "non-ascii-signature",
    ],
)
def test_forged_stale_or_unsigned_deliveries_are_rejected(
    make: Callable[[], dict[str, str]], body: str, reason: str
) -> None:
    with pytest.raises(WebhookRejectedError, match=reason):
        verify(SECRET, make(), body.encode(), now=time.time(), max_age=300)


def test_a_signed_body_nested_past_the_recursion_limit_is_refused_as_malformed() -> None:
    body = "[" * 100_000 + "]" * 100_000
    with pytest.raises(WebhookRejectedError, match="not JSON"):
        verify(SECRET, headers(body=body), body.encode(), now=time.time(), max_age=300)
