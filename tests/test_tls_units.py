"""Pure-logic unit tests of the TLS pieces: PEM bundle checks, hostname coverage, the
renewal backoff, the redirect location. No network, no daemon."""

from __future__ import annotations

import datetime

import pytest

from rivetr_git.certificates.renewal import RETRY_FIRST, RETRY_MAX, retry_delay
from rivetr_git.errors import ValidationError
from rivetr_git.proxy.tls.http_rules import redirect_location
from rivetr_git.proxy.tls.pem import read_bundle, self_signed


def test_a_bundle_reads_in_any_order_and_reports_its_names() -> None:
    cert, key = self_signed(["a.example.com", "*.b.example.com"])
    bundle = read_bundle(key + cert)
    assert bundle.info.names == ("a.example.com", "*.b.example.com")
    assert bundle.info.covers("a.example.com")
    assert bundle.info.covers("x.b.example.com")
    assert not bundle.info.covers("b.example.com")
    assert not bundle.info.covers("y.x.b.example.com")
    assert b"PRIVATE KEY" in bundle.key_pem and b"PRIVATE KEY" not in bundle.chain_pem


@pytest.mark.parametrize(
    ("bundle", "why"),
    [
        (b"", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "not valid PEM"),
    ],
)
def test_garbage_is_refused(bundle: bytes, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        read_bundle(bundle)


def test_wrong_key_expired_and_future_certificates_are_refused() -> None:
    cert, _ = self_signed(["a.example.com"])
    _, other_key = self_signed(["a.example.com"])
    with pytest.raises(ValidationError, match="does not belong"):
        read_bundle(cert + other_key)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    old_cert, old_key = self_signed(["a.example.com"], not_after=past)
    with pytest.raises(ValidationError, match="expired"):
        read_bundle(old_cert + old_key)
    good_cert, good_key = self_signed(["a.example.com"])
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=7)
    with pytest.raises(ValidationError, match="not valid before"):
        read_bundle(good_cert + good_key, now=before)


def test_error_messages_never_contain_key_material() -> None:
    cert, _ = self_signed(["a.example.com"])
    _, other_key = self_signed(["a.example.com"])
    with pytest.raises(ValidationError) as refused:
        read_bundle(cert + other_key)
    assert other_key.decode().splitlines()[1] not in str(refused.value)


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert RETRY_FIRST * 0.8 <= retry_delay(1) <= RETRY_FIRST * 1.2
    assert RETRY_FIRST * 2 * 0.8 <= retry_delay(2) <= RETRY_FIRST * 2 * 1.2
    assert retry_delay(30) <= RETRY_MAX * 1.2


def test_redirect_location_keeps_path_and_query_and_drops_the_default_port() -> None:
    assert redirect_location("a.test", 443, b"/x?y=1") == b"https://a.test/x?y=1"
    assert redirect_location("a.test", 8443, b"/") == b"https://a.test:8443/"
    assert redirect_location("a.test", 8443, b"http://evil/x") == b"https://a.test:8443/"
