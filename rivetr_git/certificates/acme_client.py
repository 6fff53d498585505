"""One ACME order (RFC 8555, HTTP-01) with the `acme` library, the one certbot is built on.

Blocking (the library uses requests): the caller runs `order` in a thread. Challenges are
answered by whoever serves `put_challenge`'s files on port 80 of every name (the proxy,
from the TLS state dir); they are removed again whatever happens.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

import requests
from acme import challenges, client, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWKRSA

from rivetr_git.errors import RivetrError
from rivetr_git.proxy.tls.pem import csr_pem, key_pem, new_key

log = logging.getLogger(__name__)

USER_AGENT = "rivetr-git"


class AcmeFailed(RivetrError):
    """The ACME server did not issue the certificate; the message says why."""


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes
    key_pem: bytes
    account_key_pem: bytes  # new when the caller had none
    account_uri: str


def new_account_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key_pem(key)


def _account(acme: client.ClientV2, email: str) -> str:
    """Register the key (or find the account it already has); its URL."""
    registration = messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True
    )
    try:
        return str(acme.new_account(registration).uri)
    except errors.ConflictError as exc:  # this key has an account already
        acme.net.account = messages.RegistrationResource(
            uri=exc.location, body=messages.Registration()
        )
        return str(exc.location)


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authz.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    raise AcmeFailed(
        f"the ACME server offers no HTTP-01 challenge for {authz.body.identifier.value}"
    )


def order(
    directory: str,
    ca_bundle: str,
    email: str,
    account_key_pem: bytes | None,
    names: list[str],
    put_challenge: Callable[[str, str], None],
    drop_challenge: Callable[[str], None],
    timeout: float = 90,
) -> Issued:
    """Get one certificate for `names` (the first is its CN). Raises AcmeFailed."""
    account_pem = account_key_pem or new_account_key()
    loaded = serialization.load_pem_private_key(account_pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    jwk = JWKRSA(key=loaded)
    net = client.ClientNetwork(jwk, user_agent=USER_AGENT, verify_ssl=ca_bundle or True)  # type: ignore[arg-type]
    tokens: list[str] = []
    key = new_key()
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net)
        uri = _account(acme, email)
        placed = acme.new_order(csr_pem(key, names))
        for authz in placed.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account
            challenge = _http01(authz)
            response, validation = challenge.response_and_validation(jwk)
            token = challenge.chall.encode("token")
            put_challenge(token, validation)
            tokens.append(token)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        done = acme.poll_and_finalize(placed, deadline)
    except errors.ValidationError as exc:
        raise AcmeFailed(_validation_detail(exc)) from None
    except errors.TimeoutError:
        raise AcmeFailed(
            f"the ACME server did not finish the order within {timeout:.0f} s"
        ) from None
    except messages.Error as exc:
        raise AcmeFailed(f"the ACME server refused: {exc.detail or exc.typ}") from None
    except (errors.Error, requests.RequestException) as exc:
        raise AcmeFailed(f"cannot talk to the ACME server at {directory}: {_short(exc)}") from None
    finally:
        for token in tokens:
            drop_challenge(token)
    return Issued(
        chain_pem=done.fullchain_pem.encode(),
        key_pem=key_pem(key),
        account_key_pem=account_pem,
        account_uri=uri,
    )


def _validation_detail(exc: errors.ValidationError) -> str:
    problems = []
    for authz in exc.failed_authzrs:
        for challenge in authz.body.challenges:
            if challenge.error is not None:
                problems.append(
                    f"{authz.body.identifier.value}: "
                    f"{challenge.error.detail or challenge.error.typ}"
                )
    return "HTTP-01 validation failed (" + ("; ".join(problems) or "no detail") + ")"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."
