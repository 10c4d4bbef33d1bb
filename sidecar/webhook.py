"""MLflow webhook deliveries: verify the signature and the timestamp, say which model changed.

MLflow 3.17 (mlflow/webhooks/delivery.py) signs ``f"{delivery_id}.{timestamp}.{body}"`` with
HMAC-SHA256 under the webhook's secret and sends ``X-MLflow-Signature: v1,<base64 digest>``,
``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` (unix seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


FORWARDED_HEADER = "X-Mlgitops-Forwarded"
"""Set to "1" by a sidecar forwarding a verified delivery to the others (never forwarded again)."""
FORWARDED_HEADERS = (DELIVERY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER, "Content-Type")
"""What a forwarded delivery carries over: the receiver verifies the signature itself."""

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}", re.ASCII)
MAX_DELIVERY_ID = 200


class WebhookRejectedError(Exception):
    """A delivery that must not trigger anything (bad signature, stale, malformed)."""

    status = 401


class MalformedDeliveryError(WebhookRejectedError):
    """Not an MLflow delivery at all (a header or body that cannot be one): a 400."""

    status = 400


class DeliveryLog:
    """Delivery ids seen within the age limit, so a replay is refused (bounded memory).

    Deliveries older than ``max_age`` are refused by their timestamp anyway, so ids are kept
    ``max_age`` seconds, and never more than ``capacity`` (the oldest go first).
    """

    def __init__(self, max_age: float, capacity: int = 4096) -> None:
        self.max_age = max_age
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        """Record ``delivery_id``; False if it was already seen (a replay)."""
        with self._lock:
            while self._seen and (
                len(self._seen) >= self.capacity
                or now - next(iter(self._seen.values())) > self.max_age
            ):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    entity: str
    action: str
    model: str | None
    version: str | None


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {key.lower(): value for key, value in headers.items()}
    value = lowered.get(name.lower())
    if not value:
        raise WebhookRejectedError(f"missing header {name}")
    return value


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, max_age: float
) -> Delivery:
    """Check a delivery's signature and age; return what it is about.

    Raises:
        WebhookRejectedError: unsigned, wrongly signed, too old (or from the future), or
            not an MLflow webhook payload.
    """
    delivery_id = _header(headers, DELIVERY_ID_HEADER)
    if len(delivery_id) > MAX_DELIVERY_ID:
        raise MalformedDeliveryError(f"{DELIVERY_ID_HEADER} is longer than {MAX_DELIVERY_ID}")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not _UNIX_SECONDS.fullmatch(timestamp):  # 400 digits would overflow float arithmetic
        raise MalformedDeliveryError(f"{TIMESTAMP_HEADER} {timestamp[:20]!r} is not unix seconds")
    sent_at = int(timestamp)
    if abs(now - sent_at) > max_age:
        raise WebhookRejectedError(
            f"timestamp {sent_at} is {now - sent_at:.0f}s away from now (limit {max_age:.0f}s)"
        )
    expected = sign(secret, delivery_id, timestamp, body).encode()
    offered = [part.strip().encode("utf-8", "replace") for part in signature.split(" ")]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):  # as bytes:
        # compare_digest refuses str with non-ASCII characters (a TypeError, once a 500)
        raise WebhookRejectedError("signature does not match (wrong secret or altered body)")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: 100,000 nested brackets
        raise MalformedDeliveryError("body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedDeliveryError("body is not a JSON object")
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    assert isinstance(data, dict)
    model = data.get("name")
    version = data.get("version")
    return Delivery(
        delivery_id=delivery_id,
        entity=str(payload.get("entity", "")),
        action=str(payload.get("action", "")),
        model=model if isinstance(model, str) else None,
        version=str(version) if version is not None else None,
    )
