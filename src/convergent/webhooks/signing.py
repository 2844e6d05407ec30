"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as _secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from convergent.clock import utcnow
from convergent.errors import SignatureInvalid

__all__ = ["SECRET_PREFIX", "new_secret", "sign", "signature_header", "verify"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode()


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` is a usable signing secret."""
    _key(secret)


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "==")  # tolerate unpadded secrets, as the spec's SDKs do
    except ValueError as exc:
        raise SignatureInvalid("the webhook secret is not base64 after whsec_") from exc
    if not key:
        raise SignatureInvalid("the webhook secret is empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets)


def verify(
    secret_or_secrets: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = 300,
    now: datetime | None = None,
) -> Any:
    """Check a received webhook and return its JSON payload; raise `SignatureInvalid` if not.

    Any of the given secrets may match any of the signatures (the sender may be rotating).
    The timestamp must be within ``tolerance`` seconds of ``now`` either way (replay window).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        raw_timestamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as exc:
        raise SignatureInvalid(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureInvalid("webhook-timestamp is not an integer") from None
    current = (now or utcnow()).timestamp()
    if abs(current - timestamp) > tolerance:
        raise SignatureInvalid("webhook-timestamp is outside the tolerance window")
    candidates = (
        [secret_or_secrets] if isinstance(secret_or_secrets, str) else list(secret_or_secrets)
    )
    expected = [sign(s, message_id, timestamp, body) for s in candidates]
    matched = False
    for given in signatures.split():
        for want in expected:
            # compare every pair so timing does not reveal which secret matched
            matched |= hmac.compare_digest(given.encode(), want.encode())
    if not matched:
        raise SignatureInvalid("no webhook signature matched")
    try:
        return json.loads(body)
    except ValueError:
        raise SignatureInvalid("the webhook body is not JSON") from None
