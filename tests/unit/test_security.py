from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.api.exchange import webhooks
from greengate.domain.cards import luhn_valid, mask_number
from greengate.domain.secret import Secret
from greengate.security.encryption import DecryptionError, Keyring, new_key_spec
from greengate.security.tokens import new_webhook_secret


def test_ciphertext_is_bound_to_its_record() -> None:
    ring = Keyring.parse(new_key_spec("k1"))
    token = ring.encrypt("4405645000006150", "merchants:1:secret_key")
    assert ring.decrypt(token, "merchants:1:secret_key") == "4405645000006150"
    with pytest.raises(DecryptionError):
        ring.decrypt(token, "merchants:2:secret_key")


def test_old_key_still_decrypts_after_rotation() -> None:
    old = new_key_spec("k1")
    token = Keyring.parse(old).encrypt("secret", "r")
    rotated = Keyring.parse(new_key_spec("k2") + "," + old)
    assert rotated.decrypt(token, "r") == "secret"
    assert rotated.needs_rotation(token)
    assert not rotated.needs_rotation(rotated.encrypt("secret", "r"))


def test_a_kept_plaintext_is_only_given_for_its_own_ciphertext_record_and_keyring() -> None:
    ring = Keyring.parse(new_key_spec("k1"))
    token = ring.encrypt("merchant secret", "merchant:1:secret_key")

    assert ring.decrypt_kept(token, "merchant:1:secret_key") == "merchant secret"
    assert ring.decrypt_kept(token, "merchant:1:secret_key") == "merchant secret"
    with pytest.raises(DecryptionError):  # another record's associated data
        ring.decrypt_kept(token, "merchant:2:secret_key")
    with pytest.raises(DecryptionError):  # the same key id, another key: nothing kept is shared
        Keyring.parse(new_key_spec("k1")).decrypt_kept(token, "merchant:1:secret_key")


def test_unknown_key_id_is_an_error() -> None:
    token = Keyring.parse(new_key_spec("k1")).encrypt("x", "r")
    with pytest.raises(DecryptionError):
        Keyring.parse(new_key_spec("k9")).decrypt(token, "r")


@pytest.mark.parametrize("spec", ["", "nokey", "k1:c2hvcnQ="])
def test_bad_key_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(spec)


@given(st.text(max_size=200))
def test_encryption_round_trips_any_text(text: str) -> None:
    ring = Keyring.parse("k1:" + "A" * 43 + "=")
    assert ring.decrypt(ring.encrypt(text, "aad"), "aad") == text


def test_secret_hides_its_value() -> None:
    secret = Secret("s3cr3t")
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret) and "s3cr3t" not in f"{secret}"
    assert secret.reveal() == "s3cr3t"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_webhook_signature_verifies_and_detects_tampering() -> None:
    from datetime import UTC, datetime

    secret = new_webhook_secret()
    body = b'{"type":"order.status_changed"}'
    headers = webhooks.headers(secret, 7, datetime(2026, 1, 1, tzinfo=UTC), body)
    assert headers["webhook-id"] == "msg_7"
    assert headers["webhook-signature"].startswith("v1,")
    assert webhooks.verify(secret, headers, body)
    assert not webhooks.verify(secret, headers, body + b" ")
    assert not webhooks.verify(new_webhook_secret(), headers, body)


def test_standard_webhooks_reference_signature() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4405645000006150", True),
        ("4716047261941981", True),
        ("4405645000006151", False),
        ("", False),
        ("4405 6450 0000 6150", True),
        ("44056450a0006150", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_masking_keeps_first_six_and_last_four() -> None:
    assert mask_number("4405645000006150") == "4405-64XX-XXXX-6150"
    assert mask_number("2200 7001 2345 6781") == "2200-70XX-XXXX-6781"
