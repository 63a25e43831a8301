"""Management requests: signed by the right member, fresh, once; decided and carried out.

Real keys from the session's development CA; the registry on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from certs.ca import DevCA, IssuedCredentials
from registry import management
from registry.service import RegistryService
from xchange.access import EndpointPattern
from xchange.canonical import canonical_json
from xchange.catalogue import CatalogueEntry, catalogue_json
from xchange.errors import AdminError, ManagementRequestError
from xchange.identifiers import ClientId, SecurityServerId
from xchange.management import cert_text, new_request, sign_request
from xchange.signing import SigningIdentity

M1, M2 = ClientId("TEST", "GOV", "3001"), ClientId("TEST", "GOV", "3002")
SS = SecurityServerId(M1, "ss-new")


@pytest.fixture
def svc(reg_engine: Engine, dev_ca: DevCA, pki_now: datetime) -> Iterator[RegistryService]:
    with Session(reg_engine) as session:
        s = RegistryService(session, actor="officer", now=pki_now + timedelta(seconds=30))
        s.initialise("TEST")
        s.add_ca("TEST CA", dev_ca.certificate)
        s.create_member_class("GOV")
        for m in (M1, M2):
            s.create_member(m.member_class, m.member_code, f"Member {m.member_code}")
        s.create_subsystem(M1, "one")
        s.create_subsystem(M2, "two")
        session.commit()
        yield s


@pytest.fixture(scope="module")
def identity(issue_member_sign: Callable[..., IssuedCredentials]) -> Callable[[ClientId],
                                                                              SigningIdentity]:
    made: dict[ClientId, SigningIdentity] = {}

    def get(member: ClientId) -> SigningIdentity:
        if member not in made:
            creds = issue_member_sign(str(member))
            made[member] = SigningIdentity(member, creds.key, (creds.certificate,))
        return made[member]

    return get


@pytest.fixture(scope="module")
def auth(issue_server_auth: Callable[..., IssuedCredentials]) -> IssuedCredentials:
    return issue_server_auth(str(SS))


def register_auth(svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
                  auth: IssuedCredentials, *, signer: ClientId = M1,
                  with_pop: bool = True) -> bytes:
    request = new_request("auth_cert_register", SS, now=svc.now,
                          auth_cert=cert_text(auth.certificate), address="127.0.0.1:5577")
    return sign_request(request, identity(signer), auth.key if with_pop else None)


def refused(svc: RegistryService, data: bytes, code: str) -> str:
    with pytest.raises(ManagementRequestError) as info:
        management.submit(svc, data)
    assert info.value.code == code
    return info.value.message


def test_bootstrap_of_a_new_server_through_an_officer(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    answer = management.submit(svc, register_auth(svc, identity, auth))
    assert answer["state"] == "pending"
    with pytest.raises(AdminError):
        svc.get_server(SS)  # nothing happens before the officer decides
    (row,) = management.list_requests(svc, state="pending").items
    decided = management.decide(svc, row["id"], "approve", "checked by phone")
    assert (decided["state"], decided["decided_by"]) == ("approved", "officer")
    server = svc.get_server(SS)
    assert server["address"] == "127.0.0.1:5577" and len(server["auth_cert_hashes"]) == 1
    assert management.request_state(svc, answer["request_id"])["state"] == "approved"
    with pytest.raises(AdminError, match="not pending"):
        management.decide(svc, row["id"], "reject")

    # Then a client on it, signed by the client's member, rejected by the officer.
    request = new_request("client_register", SS, now=svc.now, client="TEST/GOV/3001/one")
    answer = management.submit(svc, sign_request(request, identity(M1)))
    row_id = management.list_requests(svc, state="pending").items[0]["id"]
    assert management.decide(svc, row_id, "reject", "no")["state"] == "rejected"
    assert svc.get_server(SS)["clients"] == []


def test_auto_approval_where_the_settings_allow(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    svc.update_settings({"auto_approve_clients": True, "auto_approve_auth_certs": True})
    # The bootstrap is never automatic.
    assert management.submit(svc, register_auth(svc, identity, auth))["state"] == "pending"
    row_id = management.list_requests(svc).items[0]["id"]
    management.decide(svc, row_id, "approve")
    own = new_request("client_register", SS, now=svc.now, client="TEST/GOV/3001/one")
    assert management.submit(svc, sign_request(own, identity(M1)))["state"] == "approved"
    assert svc.get_server(SS)["clients"] == [{"id": "TEST/GOV/3001/one", "enabled": True}]
    other = new_request("client_register", SS, now=svc.now, client="TEST/GOV/3002/two")
    assert management.submit(svc, sign_request(other, identity(M2)))["state"] == "pending"


# -- the attacks that matter --------------------------------------------------------------------


def test_a_forged_signature_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    envelope = json.loads(register_auth(svc, identity, auth))
    envelope["request"]["address"] = "evil.example:5500"  # changed after signing
    message = refused(svc, canonical_json(envelope), "registry.management.invalid_signature")
    assert "does not verify" in message


def test_a_missing_signature_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    envelope = json.loads(register_auth(svc, identity, auth))
    del envelope["signature"]
    refused(svc, canonical_json(envelope), "registry.management.bad_request")
    refused(svc, register_auth(svc, identity, auth, with_pop=False),
            "registry.management.invalid_signature")


def test_a_signer_from_an_unapproved_ca_is_refused(
    svc: RegistryService, auth: IssuedCredentials, tmp_path: Path, pki_now: datetime
) -> None:
    rogue = DevCA.create(tmp_path / "rogue", "TEST", now=pki_now)
    creds = rogue.issue_key_and_cert(tmp_path / "m", "sign", M1, member_name="M", now=pki_now)
    fake = SigningIdentity(M1, creds.key, (creds.certificate,))
    request = new_request("address_change", SecurityServerId.parse("TEST/GOV/3001/ss-x"),
                          now=svc.now, address="127.0.0.1:1")
    message = refused(svc, sign_request(request, fake), "registry.management.invalid_signature")
    assert "does not chain" in message


def test_a_request_for_another_members_subsystem_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    management.submit(svc, register_auth(svc, identity, auth))
    management.decide(svc, management.list_requests(svc).items[0]["id"], "approve")
    request = new_request("client_register", SS, now=svc.now, client="TEST/GOV/3002/two")
    message = refused(svc, sign_request(request, identity(M1)),
                      "registry.management.not_allowed")
    assert "must be signed by TEST/GOV/3002" in message
    # Nor may another member register an auth certificate for M1's server.
    refused(svc, register_auth(svc, identity, auth, signer=M2),
            "registry.management.not_allowed")


def test_a_replayed_request_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    data = register_auth(svc, identity, auth)
    management.submit(svc, data)
    refused(svc, data, "registry.management.duplicate_request")


def test_a_stale_request_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    request = new_request("auth_cert_register", SS, now=svc.now - timedelta(minutes=11),
                          auth_cert=cert_text(auth.certificate), address="127.0.0.1:5577")
    refused(svc, sign_request(request, identity(M1), auth.key),
            "registry.management.stale_request")


def test_requests_naming_unknown_things_are_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
) -> None:
    request = new_request("client_register", SS, now=svc.now, client="TEST/GOV/3001/one")
    assert "not registered" in refused(svc, sign_request(request, identity(M1)),
                                       "registry.management.bad_request")
    refused(svc, b'{"request": {}, "signature": "x"}', "registry.management.bad_request")
    refused(svc, b"\xff", "registry.management.bad_request")


# -- service catalogue updates ----------------------------------------------------------------

ONE, TWO = ClientId.parse("TEST/GOV/3001/one"), ClientId.parse("TEST/GOV/3002/two")


def _host(svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
          auth: IssuedCredentials, *clients: ClientId) -> None:
    """SS approved, with ``clients`` registered on it."""
    management.submit(svc, register_auth(svc, identity, auth))
    management.decide(svc, management.list_requests(svc).items[0]["id"], "approve")
    for client in clients:
        svc.add_client(SS, client)


def catalogue_update(svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
                     client: ClientId, entries: list[CatalogueEntry], *,
                     server: SecurityServerId = SS) -> bytes:
    request = new_request("service_catalogue_update", server, now=svc.now, client=str(client),
                          services=catalogue_json(entries))
    return sign_request(request, identity(client.member))


def test_a_catalogue_update_replaces_the_providers_entries_at_once(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    _host(svc, identity, auth, ONE, TWO)
    svc.create_service(ONE, "old", "SOAP", "entered by an officer")
    svc.create_service(ONE, "persons", "REST", "by an officer", "{}")
    svc.create_service(TWO, "theirs", "REST")
    entries = [CatalogueEntry("persons", "OPENAPI", "Persons", "who lives where",
                              (EndpointPattern("GET", "/persons/*"),)),
               CatalogueEntry("ping", "REST", version="v1")]
    answer = management.submit(svc, catalogue_update(svc, identity, ONE, entries))
    assert answer["state"] == "approved"
    listed = {s["code"]: s for s in svc.list_services(provider=ONE).items}
    assert set(listed) == {"persons", "ping"}  # the officer's "old" is gone
    persons = listed["persons"]
    assert (persons["type"], persons["kind"], persons["title"], persons["description"]) == \
        ("OPENAPI", "REST", "Persons", "who lives where")
    assert persons["endpoints"] == [{"method": "GET", "path": "/persons/*"}]
    assert persons["published_by"] == str(SS) and persons["published_at"] is not None
    assert persons["description_document"] == "{}"  # an officer's document is kept
    assert listed["ping"]["version"] == "v1"
    assert [s["code"] for s in svc.list_services(provider=TWO).items] == ["theirs"]
    (row,) = management.list_requests(svc, state="approved").items[:1]
    assert row["kind"] == "service_catalogue_update" and row["member"] == str(M1)
    assert "provider's own service catalogue" in row["comment"]
    (audit,) = svc.list_audit(action="service.catalogue.replace").items
    assert audit["actor"] == "officer"  # the test's actor; the API says security-server
    assert audit["before"]["services"] == ["old", "persons"]
    assert audit["after"]["services"] == ["persons", "ping"]

    # an empty list withdraws everything
    management.submit(svc, catalogue_update(svc, identity, ONE, []))
    assert svc.list_services(provider=ONE).items == []


def test_a_catalogue_update_for_a_client_not_hosted_by_the_sender_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    _host(svc, identity, auth)  # the server exists, "two" is not its client
    entries = [CatalogueEntry("fake", "REST")]
    message = refused(svc, catalogue_update(svc, identity, TWO, entries),
                      "registry.management.not_allowed")
    assert "not a client of" in message
    assert svc.list_services(provider=TWO).items == []
    # nor from a server that does not exist at all
    refused(svc, catalogue_update(svc, identity, ONE, entries,
                                  server=SecurityServerId(M1, "nowhere")),
            "registry.management.bad_request")


def test_a_catalogue_update_signed_by_the_server_owner_for_another_members_client(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    _host(svc, identity, auth, TWO)
    request = new_request("service_catalogue_update", SS, now=svc.now, client=str(TWO),
                          services=[])
    refused(svc, sign_request(request, identity(M1)), "registry.management.not_allowed")


def test_a_replayed_catalogue_update_is_refused(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    _host(svc, identity, auth, ONE)
    first = catalogue_update(svc, identity, ONE, [CatalogueEntry("a", "REST")])
    management.submit(svc, first)
    management.submit(svc, catalogue_update(svc, identity, ONE, []))
    refused(svc, first, "registry.management.duplicate_request")
    assert svc.list_services(provider=ONE).items == []  # the replay did not bring "a" back


def test_a_subsystem_no_server_hosts_any_more_loses_what_servers_published(
    svc: RegistryService, identity: Callable[[ClientId], SigningIdentity],
    auth: IssuedCredentials,
) -> None:
    """Once unregistered, a server cannot publish the empty list (it no longer hosts the
    subsystem): the registry withdraws the published entries itself when the last server
    stops hosting it, by a client_delete or by the server's deletion."""
    _host(svc, identity, auth, ONE, TWO)
    other = SecurityServerId(M1, "other")
    svc.create_server(other, "127.0.0.1:5578")
    svc.add_client(other, ONE)
    management.submit(svc, catalogue_update(svc, identity, ONE, [CatalogueEntry("a", "REST")]))
    management.submit(svc, catalogue_update(svc, identity, TWO, [CatalogueEntry("b", "REST")]))
    svc.create_service(ONE, "manual", "REST", "by an officer")

    def codes(client: ClientId) -> set[str]:
        return {s["code"] for s in svc.list_services(provider=client).items}

    request = new_request("client_delete", SS, now=svc.now, client=str(ONE))
    management.submit(svc, sign_request(request, identity(M1)))
    pending = management.list_requests(svc, state="pending").items[0]
    management.decide(svc, pending["id"], "approve")
    assert codes(ONE) == {"a", "manual"}  # "other" still hosts it
    refused(svc, catalogue_update(svc, identity, ONE, []), "registry.management.not_allowed")
    svc.remove_client(other, ONE)
    assert codes(ONE) == {"manual"}  # an officer's entry stays
    (audit,) = svc.list_audit(action="service.catalogue.withdraw").items
    assert (audit["target"], audit["before"]["services"]) == (str(ONE), ["a"])

    svc.delete_server(SS)  # the last host of TWO
    assert codes(TWO) == set()
