"""Management requests at the registry: receive, store, decide, carry out.

A security server sends a signed request (:mod:`xchange.management`) to the public route
``POST /management/requests``; :func:`submit` verifies it against the approved CAs, refuses
a request id seen before (replay), checks that what it names exists (except the server of
an auth-certificate registration: that is how a new server bootstraps, as in X-Road, and the
officer's approval creates it with the address in the request), and stores it *pending*.

Where the federation settings allow it the request is approved at once: an auth
certificate for a server that already has one (``auto_approve_auth_certs``), a client whose
member owns the server (``auto_approve_clients``).  A ``service_catalogue_update`` is always
approved at once, once its signature (the subsystem's member) and the sender (a server that
hosts the subsystem, else ``registry.management.not_allowed``) are checked: it is routine and
changes nothing but that provider's own catalogue entries, which it replaces.

Otherwise a registration officer decides through the admin API: approve (the change is
made, audited under the officer's name, in the same transaction), reject, or revoke.
States never go back::

    pending -> approved | rejected | revoked
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from sqlmodel import col, select

from registry.models import ApprovedCARow, ManagementRequestRow
from registry.service import Page, RegistryService
from xchange.errors import AdminError, ManagementRequestError
from xchange.identifiers import ClientId, SecurityServerId
from xchange.management import ManagementRequest, VerifiedRequest, verify_request

__all__ = ["decide", "get_request", "list_requests", "request_state", "submit"]

STATES = ("pending", "approved", "rejected", "revoked")


def _json(row: ManagementRequestRow) -> dict[str, Any]:
    def t(v: datetime | None) -> str | None:
        return None if v is None else v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {"id": row.id, "request_id": row.request_id, "kind": row.kind, "server": row.server,
            "member": row.member, "payload": row.payload, "state": row.state,
            "created_at": t(row.created_at), "decided_at": t(row.decided_at),
            "decided_by": row.decided_by, "comment": row.comment}


def _request(row: ManagementRequestRow) -> ManagementRequest:
    p = row.payload
    fields = {k: v for k, v in p.items()
              if k not in ("type", "request_id", "kind", "server", "created_at")}
    return ManagementRequest(row.request_id, row.kind, SecurityServerId.parse(row.server),
                             row.created_at, fields)


def _check_referents(svc: RegistryService, request: ManagementRequest) -> bool:
    """Raise if the request names what does not exist; return whether the server exists."""
    try:
        svc.server_row(request.server)
        exists = True
    except AdminError:
        exists = False
    if not exists and request.kind != "auth_cert_register":
        raise ManagementRequestError(f"security server {request.server} is not registered")
    if not svc.is_registered(request.server.owner):
        raise ManagementRequestError(f"member {request.server.owner} is not registered")
    client = request.client
    if client is not None and not svc.is_registered(client):
        raise ManagementRequestError(f"subsystem {client} is not registered")
    if request.kind == "service_catalogue_update" and (
            client is None or not svc.hosts(request.server, client)):
        raise ManagementRequestError(f"{client} is not a client of {request.server}: only "
                                     "the server hosting a subsystem publishes its services",
                                     code="registry.management.not_allowed")
    if "new_owner" in request.fields and not svc.is_registered(
            ClientId.parse(request.fields["new_owner"])):
        raise ManagementRequestError(f"member {request.fields['new_owner']} is not registered")
    return exists


def _auto_approvable(svc: RegistryService, request: ManagementRequest,
                     server_exists: bool) -> bool:
    if request.kind == "service_catalogue_update":
        return True  # routine, and only ever about the sender's own hosted client
    settings = svc.settings_row()
    if request.kind == "auth_cert_register":
        return settings.auto_approve_auth_certs and server_exists and bool(
            svc.get_server(request.server)["auth_cert_hashes"])
    client = request.client
    if request.kind == "client_register" and client is not None:
        return settings.auto_approve_clients and client.member == request.server.owner
    return False


def submit(svc: RegistryService, data: bytes) -> dict[str, Any]:
    """Verify and store a request (and carry it out if it may be approved automatically).
    The caller commits.  Raises :class:`ManagementRequestError`."""
    anchors = [x509.load_der_x509_certificate(r.certificate)
               for r in svc.session.exec(select(ApprovedCARow))]
    if not anchors:
        raise ManagementRequestError("the registry has no approved CA yet")
    verified: VerifiedRequest = verify_request(data, anchors=anchors, now=svc.now)
    request = verified.request
    if svc.session.exec(select(ManagementRequestRow).where(
            ManagementRequestRow.request_id == request.request_id)).first() is not None:
        raise ManagementRequestError(f"request {request.request_id} was already received",
                                     code="registry.management.duplicate_request")
    exists = _check_referents(svc, request)
    row = ManagementRequestRow(
        request_id=request.request_id, kind=request.kind, server=str(request.server),
        member=str(verified.signer), payload=request.to_payload(), state="pending",
        created_at=svc.now, document=verified.document.decode("utf-8"))
    svc.session.add(row)
    svc.session.flush()
    svc.audit("management.submit", str(request.server), None, _json(row))
    if _auto_approvable(svc, request, exists):
        _carry_out(svc, request)
        _set_state(svc, row, "approved", "automatically: a provider's own service catalogue"
                   if request.kind == "service_catalogue_update"
                   else "automatically, as the federation settings allow")
    return {"request_id": row.request_id, "state": row.state, "kind": row.kind}


def _carry_out(svc: RegistryService, request: ManagementRequest) -> None:
    server, client = request.server, request.client
    if request.kind == "auth_cert_register":
        cert = request.auth_cert
        assert cert is not None
        try:
            svc.server_row(server)
        except AdminError:  # the bootstrap: the first certificate brings the server with it
            svc.create_server(server, request.fields["address"])
        svc.add_auth_cert(server, cert)
    elif request.kind == "auth_cert_delete":
        svc.delete_auth_cert(server, request.fields["cert_hash"])
    elif request.kind == "address_change":
        svc.change_address(server, request.fields["address"])
    elif request.kind == "owner_change":
        svc.change_owner(server, ClientId.parse(request.fields["new_owner"]))
    elif request.kind == "service_catalogue_update":
        assert client is not None and request.services is not None
        svc.replace_catalogue(client, request.services, server)
    else:
        assert client is not None
        if request.kind == "client_register":
            svc.add_client(server, client)
        elif request.kind == "client_delete":
            svc.remove_client(server, client)
        else:
            svc.set_client_enabled(server, client, request.kind == "client_enable")


def _set_state(svc: RegistryService, row: ManagementRequestRow, state: str,
               comment: str) -> None:
    before = _json(row)
    row.state, row.decided_at, row.decided_by, row.comment = state, svc.now, svc.actor, comment
    svc.session.add(row)
    svc.session.flush()
    svc.audit(f"management.{state}", row.server, before, _json(row))


def _row(svc: RegistryService, request_id: int) -> ManagementRequestRow:
    row = svc.session.get(ManagementRequestRow, request_id)
    if row is None:
        raise AdminError(f"management request {request_id} does not exist",
                         code="admin.not_found")
    return row


def decide(svc: RegistryService, request_id: int, decision: str,
           comment: str = "") -> dict[str, Any]:
    """``approve`` (and carry out), ``reject`` or ``revoke`` a pending request."""
    row = _row(svc, request_id)
    if row.state != "pending":
        raise AdminError(f"request {request_id} is {row.state}, not pending",
                         code="admin.conflict")
    if decision == "approve":
        try:
            _carry_out(svc, _request(row))
        except ManagementRequestError as exc:
            raise AdminError(exc.message, code="admin.conflict") from exc
    state = {"approve": "approved", "reject": "rejected", "revoke": "revoked"}[decision]
    _set_state(svc, row, state, comment)
    return _json(row)


def list_requests(svc: RegistryService, *, limit: int = 100, offset: int = 0,
                  state: str | None = None) -> Page:
    query = select(ManagementRequestRow).order_by(col(ManagementRequestRow.id).desc())
    if state is not None:
        query = query.where(ManagementRequestRow.state == state)
    return svc.page(query, limit, offset, _json)


def get_request(svc: RegistryService, request_id: int) -> dict[str, Any]:
    return _json(_row(svc, request_id))


def request_state(svc: RegistryService, request_id: str) -> dict[str, Any]:
    """What the sending security server may know: the state of its request."""
    row = svc.session.exec(select(ManagementRequestRow).where(
        ManagementRequestRow.request_id == request_id)).first()
    if row is None:
        raise AdminError(f"no management request {request_id}", code="admin.not_found")
    return {"request_id": row.request_id, "state": row.state, "kind": row.kind}
