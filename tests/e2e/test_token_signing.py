"""The cross-agency query with the consumer's signing key in a PKCS#11 token (SoftHSM2).

The consumer's security server runs as its own process and signs through the token; the
provider verifies that signature like any other.  The key never existed outside the token:
it was generated there, and its certificate issued from a request signed there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from certs.keys import load_certificates
from certs.pkcs8 import PEM_BEGIN
from tests.conftest import SoftHsm
from tests.e2e.conftest import log_records, read_records
from xchange.signing import verify_message
from xchange_cli.audit import check_log
from xchange_cli.demo import query
from xchange_cli.federation import (
    Federation,
    RunningFederation,
    TokenSlot,
    build_federation,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm) -> Iterator[Federation]:
    slot = TokenSlot(softhsm.module, softhsm.token_label, softhsm.pin)
    built = build_federation(tmp_path_factory.mktemp("token-federation"),
                             consumer_signing_token=slot)
    with RunningFederation(built):
        yield built


def test_consumer_key_is_in_the_token_not_on_disk(fed: Federation) -> None:
    consumer = fed.servers[1]
    assert not (consumer.directory / "sign.key").exists()
    config = consumer.config.read_text()
    assert "pkcs11 = { module = " in config and 'pin_file = "token.pin"' in config
    # every key that is on disk is encrypted
    for path in fed.root.rglob("*.key"):
        assert path.read_bytes().startswith(PEM_BEGIN.encode()), path


def test_query_signed_in_the_token_is_answered_and_verified_by_the_provider(
    fed: Federation,
) -> None:
    provider, consumer = fed.servers
    message_id = str(uuid.uuid4())
    answer = query(consumer.client_proxy_url, str(fed.services["persons"]),
                   "/persons/38001010001", str(fed.allowed_client), {"X-Road-Id": message_id})
    assert answer.status == 200, answer.body
    assert answer.json()["name"] == "Mari Maasikas"

    # The provider accepted (verified) the request and logged it; its signature is the
    # token's, under the certificate issued for the token's key.
    [request, _response] = asyncio.run(log_records(provider, message_id))
    assert (request.entry.kind, request.entry.direction, request.entry.status) == (
        "request", "incoming", "ok")
    verified = verify_message(request.entry.signature, request.entry.header_part,
                              request.entry.body, expected_signer=fed.allowed_client,
                              anchors=[fed.ca.certificate], at=datetime.now(UTC),
                              code="server.serverproxy.invalid_signature")
    assert verified.algorithm == "ES256"
    assert verified.certificate == load_certificates(consumer.directory / "sign.pem")[0]
    for server in (provider, consumer):
        result = check_log(server.config)
        assert result.ok, result.failures


def test_concurrent_queries_are_signed_in_batches_by_the_token(fed: Federation) -> None:
    """Requests that arrive while the token signs wait for it and are signed together, one
    signature in the token for the batch; the provider verifies every one of them."""
    provider, consumer = fed.servers
    service, client = str(fed.services["persons"]), str(fed.allowed_client)
    ids = [str(uuid.uuid4()) for _ in range(240)]

    def ask(message_id: str) -> int:
        return query(consumer.client_proxy_url, service, "/persons/38001010001", client,
                     {"X-Road-Id": message_id}).status

    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(ask, ids)) == [200] * len(ids)
    records = asyncio.run(read_records(provider))
    shared = Counter(r.entry.signature.split("~")[0] for r in records
                     if r.entry.kind == "request" and r.entry.query_id in set(ids)
                     and "~" in r.entry.signature)
    assert shared and max(shared.values()) > 1
    for server in (provider, consumer):
        result = check_log(server.config)
        assert result.ok, result.failures
