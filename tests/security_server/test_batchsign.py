"""Batch signing of the messages that wait for one key (security_server/batchsign.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from certs.ca import IssuedCredentials
from security_server.batchsign import KeySigner
from xchange.errors import InvalidSignatureError
from xchange.identifiers import ClientId
from xchange.signing import SigningIdentity, ToSign, sign_batch, verify_payload

MEMBER = ClientId("TEST", "GOV", "1234")
CODE = "server.serverproxy.invalid_signature"


@pytest.fixture(scope="module")
def identity(issue_member_sign: Callable[..., IssuedCredentials]) -> SigningIdentity:
    creds = issue_member_sign(str(MEMBER))
    return SigningIdentity(MEMBER, creds.key, creds.chain)


def payload(i: int) -> bytes:
    return i.to_bytes(4, "big") * 16


def nonce(i: int) -> str:
    return f"{i:032d}"


def check(identity: SigningIdentity, signatures: list[str], now: datetime) -> list[int | None]:
    """Verify every signature against its own payload and nonce; their batch sizes."""
    sizes = []
    for i, signature in enumerate(signatures):
        verified = verify_payload(signature, payload(i), expected_signer=MEMBER,
                                  anchors=[identity.chain[-1]], at=now, code=CODE)
        assert verified.nonce == nonce(i)
        sizes.append(verified.batch_size)
    return sizes


class Recording:
    """The real ``sign_batch``, noting the size of every batch it was given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, identity: SigningIdentity, messages: list[ToSign]) -> list[str]:
        self.sizes.append(len(messages))
        return sign_batch(identity, messages)


async def test_a_lone_message_is_signed_at_once_alone(identity: SigningIdentity,
                                                      pki_now: datetime) -> None:
    signer = KeySigner(identity)
    # One after the other: never a batch.
    signatures = [await signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i))
                  for i in range(3)]
    assert check(identity, signatures, pki_now) == [None] * 3
    assert not any("~" in s for s in signatures)
    assert (signer.stats.signatures, signer.stats.messages) == (3, 3)


async def test_messages_that_wait_in_one_loop_iteration_share_a_signature(
        identity: SigningIdentity, pki_now: datetime) -> None:
    recording = Recording()
    signer = KeySigner(identity, sign=recording)
    signatures = await asyncio.gather(*(signer.sign(payload(i), signed_at=pki_now,
                                                    nonce=nonce(i)) for i in range(10)))
    # The first found the key free and went at once; the other nine waited for it.
    assert recording.sizes == [1, 9]
    assert check(identity, list(signatures), pki_now) == [None] + [9] * 9
    assert signer.stats.mean_batch == 5.0


async def test_the_batch_size_is_bounded(identity: SigningIdentity, pki_now: datetime) -> None:
    recording = Recording()
    signer = KeySigner(identity, max_batch=4, sign=recording)
    signatures = await asyncio.gather(*(signer.sign(payload(i), signed_at=pki_now,
                                                    nonce=nonce(i)) for i in range(10)))
    assert recording.sizes == [1, 4, 4, 1]
    check(identity, list(signatures), pki_now)
    with pytest.raises(ValueError, match="1 to 1024"):
        KeySigner(identity, max_batch=0)


async def test_a_token_key_collects_the_messages_that_wait_while_it_signs(
        identity: SigningIdentity, pki_now: datetime) -> None:
    """A key in a token signs in its thread; what arrives meanwhile is signed next, together.
    The first signing is held until the others are queued, as a slow device would be."""
    release = threading.Event()
    recording = Recording()

    def slow_token(ident: SigningIdentity, messages: list[ToSign]) -> list[str]:
        release.wait(30)
        return recording(ident, messages)

    with ThreadPoolExecutor(1) as token:
        signer = KeySigner(identity, executor=token, sign=slow_token)
        first = asyncio.ensure_future(signer.sign(payload(0), signed_at=pki_now,
                                                  nonce=nonce(0)))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(signer.sign(payload(i), signed_at=pki_now,
                                                  nonce=nonce(i))) for i in range(1, 6)]
        await asyncio.sleep(0)
        assert not first.done()
        release.set()
        signatures = await asyncio.gather(first, *rest)
    assert recording.sizes == [1, 5]
    assert check(identity, list(signatures), pki_now) == [None] + [5] * 5


async def test_a_failure_fails_its_batch_and_the_signer_goes_on(
        identity: SigningIdentity, pki_now: datetime) -> None:
    failing = {"on": True}

    def flaky(ident: SigningIdentity, messages: list[ToSign]) -> list[str]:
        if failing["on"]:
            raise RuntimeError("token removed")
        return sign_batch(ident, messages)

    signer = KeySigner(identity, sign=flaky)
    results = await asyncio.gather(*(signer.sign(payload(i), nonce=nonce(i)) for i in range(4)),
                                   return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    failing["on"] = False
    signatures = await asyncio.gather(*(signer.sign(payload(i), signed_at=pki_now,
                                                    nonce=nonce(i)) for i in range(3)))
    check(identity, list(signatures), pki_now)


async def test_a_caller_that_went_away_is_left_out(identity: SigningIdentity,
                                                   pki_now: datetime) -> None:
    recording = Recording()
    signer = KeySigner(identity, sign=recording)
    tasks = [asyncio.ensure_future(signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i)))
             for i in range(4)]
    await asyncio.sleep(0)  # the first is signed, the others wait for the next iteration
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert recording.sizes == [1, 2]
    for i in (0, 1, 3):
        signature = done[i]
        assert isinstance(signature, str)
        verify_payload(signature, payload(i), expected_signer=MEMBER,
                       anchors=[identity.chain[-1]], at=pki_now, code=CODE)
    # A signature is bound to its own message only.
    signature = done[1]
    assert isinstance(signature, str)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_payload(signature, payload(3), expected_signer=MEMBER,
                       anchors=[identity.chain[-1]], at=pki_now, code=CODE)


async def test_then_gets_each_signature_in_its_signing_turn_before_its_caller(
        identity: SigningIdentity, pki_now: datetime) -> None:
    events: list[tuple[str, int]] = []
    seen: dict[int, str] = {}
    signer = KeySigner(identity)

    async def one(i: int) -> str:
        def then(signature: str) -> None:
            seen[i] = signature
            events.append(("then", i))

        signature = await signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i), then=then)
        events.append(("resumed", i))
        return signature

    signatures = await asyncio.gather(*(one(i) for i in range(4)))
    assert [seen[i] for i in range(4)] == list(signatures)
    check(identity, list(signatures), pki_now)
    # The first went alone, at once; the three that waited were handed their signatures
    # in one pass, before any of them resumed.
    assert events == [("then", 0), ("resumed", 0), ("then", 1), ("then", 2), ("then", 3),
                      ("resumed", 1), ("resumed", 2), ("resumed", 3)]


async def test_a_then_that_raises_fails_its_own_message_only(
        identity: SigningIdentity, pki_now: datetime) -> None:
    signer = KeySigner(identity)

    def then(i: int) -> Callable[[str], None]:
        def check_it(signature: str) -> None:
            if i in (0, 2):
                raise ValueError(f"record {i} refused")
        return check_it

    results = await asyncio.gather(
        *(signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i), then=then(i))
          for i in range(4)), return_exceptions=True)
    assert [str(r) if isinstance(r, ValueError) else "signed" for r in results] == [
        "record 0 refused", "signed", "record 2 refused", "signed"]


async def test_a_token_key_calls_then_before_waking_each_caller(
        identity: SigningIdentity, pki_now: datetime) -> None:
    events: list[str] = []

    async def one(signer: KeySigner, i: int) -> str:
        signature = await signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i),
                                      then=lambda s: events.append(f"then {i}"))
        events.append(f"resumed {i}")
        return signature

    with ThreadPoolExecutor(1) as token:
        signer = KeySigner(identity, executor=token)
        signatures = await asyncio.gather(*(one(signer, i) for i in range(3)))
    check(identity, list(signatures), pki_now)
    # A token signs the first alone (its thread was idle), the other two together.
    assert events == ["then 0", "resumed 0", "then 1", "then 2", "resumed 1", "resumed 2"]


async def test_a_caller_that_went_away_gets_no_then(identity: SigningIdentity,
                                                    pki_now: datetime) -> None:
    called: list[int] = []
    signer = KeySigner(identity)

    def then(i: int) -> Callable[[str], None]:
        return lambda signature: called.append(i)

    tasks = [asyncio.ensure_future(signer.sign(payload(i), signed_at=pki_now, nonce=nonce(i),
                                               then=then(i)))
             for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert called == [0, 2]
