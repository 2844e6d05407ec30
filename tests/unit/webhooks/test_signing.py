from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from convergent.errors import SignatureInvalid
from convergent.webhooks import new_secret, sign, signature_header, verify

NOW = datetime(2030, 1, 1, tzinfo=UTC)
STAMP = int(NOW.timestamp())
BODY = b'{"data":{"id":"o-1","state":"paid","version":3},"type":"order.paid"}'


def headers(signature: str, message_id: str = "msg_1", stamp: int = STAMP) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }


def test_new_secrets_have_the_whsec_prefix_and_differ() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_")
    assert a != b


def test_standardwebhooks_accepts_our_signature() -> None:
    secret = new_secret()
    signed = headers(sign(secret, "msg_1", STAMP, BODY))
    wh = Webhook(secret)
    assert wh.sign("msg_1", NOW, BODY.decode()) == signed["webhook-signature"]


def test_standardwebhooks_verifies_a_callback_we_signed_now() -> None:
    secret = new_secret()
    stamp = int(datetime.now(UTC).timestamp())
    signed = headers(sign(secret, "msg_1", stamp, BODY), stamp=stamp)
    assert Webhook(secret).verify(BODY, signed)["type"] == "order.paid"


def test_we_verify_what_standardwebhooks_signs() -> None:
    secret = new_secret()
    signature = Webhook(secret).sign("msg_9", NOW, BODY.decode())
    assert verify(secret, headers(signature, "msg_9"), BODY, now=NOW)["type"] == "order.paid"


def test_any_of_several_signatures_may_match_any_secret() -> None:
    old, new = new_secret(), new_secret()
    signature = signature_header([new, old], "msg_1", STAMP, BODY)
    verify([old], headers(signature), BODY, now=NOW)
    verify(new, headers(signature), BODY, now=NOW)


def test_a_changed_body_is_refused() -> None:
    secret = new_secret()
    signed = headers(sign(secret, "msg_1", STAMP, BODY))
    with pytest.raises(SignatureInvalid):
        verify(secret, signed, BODY.replace(b"paid", b"free"), now=NOW)


def test_another_secret_is_refused() -> None:
    signed = headers(sign(new_secret(), "msg_1", STAMP, BODY))
    with pytest.raises(SignatureInvalid):
        verify(new_secret(), signed, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: int) -> None:
    secret = new_secret()
    signed = headers(sign(secret, "msg_1", STAMP, BODY))
    with pytest.raises(SignatureInvalid, match="tolerance"):
        verify(secret, signed, BODY, now=NOW + timedelta(seconds=skew))


def test_a_missing_header_is_refused() -> None:
    with pytest.raises(SignatureInvalid, match="webhook-signature"):
        verify(new_secret(), {"webhook-id": "m", "webhook-timestamp": str(STAMP)}, BODY, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    secret = new_secret()
    signed = {k.title(): v for k, v in headers(sign(secret, "msg_1", STAMP, BODY)).items()}
    verify(secret, signed, BODY, now=NOW)
