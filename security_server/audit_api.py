"""The audit endpoints of the security server's admin API (auditor role, ``audit.read``).

The same three things ``xchange audit`` does on the server, over the admin listener:

* ``GET /api/v1/messagelog/records`` -- search records by ``query_id``, ``client``,
  ``service``, ``user_id``, ``since``, ``until`` (ISO 8601 times), ``limit`` (1-1000);
* ``GET /api/v1/messagelog/queries/{query_id}/evidence`` -- the request and response of one
  query with their evidence, as one ASiC-E container (``application/vnd.etsi.asic-e+zip``);
* ``GET /api/v1/messagelog/verification`` -- the live log verified with the server's own
  trust anchors (its configuration anchor and last good global configuration).

Each call first authenticates and authorises like every admin call
(:func:`security_server.admin_api.authorize`), and is then itself written to the admin audit
log (actions ``messagelog.search``, ``messagelog.export``, ``messagelog.verify``, with the
criteria and what was returned), whatever its outcome.  The work is
:mod:`security_server.logaudit`'s: one code path with the command line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aiohttp import web
from sqlalchemy.engine import Engine

from security_server.admin_api import ADMIN, authorize
from security_server.logaudit import export_query, verify_live_log
from security_server.messagelog import LogQuery, MessageLog
from xchange.audit import AuditTrust
from xchange.errors import BadRequestError, XRoadError
from xchange.evidence import format_time
from xchange.messagelog import StoredRecord

__all__ = ["AUDIT", "AuditContext", "add_audit_routes"]

PERMISSION: Final = "audit.read"
_MAX_LIMIT: Final = 1000


@dataclass
class AuditContext:
    """What the audit endpoints read: the message log, its database, and the trust."""

    log: MessageLog
    engine: Engine
    trust: Callable[[], AuditTrust]
    """Read on each verification (global configuration changes)."""
    subject: str


AUDIT = web.AppKey("xchange_audit", AuditContext)


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message, code="admin.bad_request")


def _time(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad(f"{name} is not an ISO 8601 time") from exc
    if value.utcoffset() is None:
        raise _bad(f"{name} needs a time zone (Z or +hh:mm)")
    return value


def _query(request: web.Request) -> tuple[LogQuery, int]:
    known = {"query_id", "client", "service", "user_id", "since", "until", "limit"}
    if unknown := sorted(set(request.query) - known):
        raise _bad(f"unknown parameter(s): {', '.join(unknown)}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise _bad("limit is an integer") from exc
    if not 1 <= limit <= _MAX_LIMIT:
        raise _bad(f"limit must be 1 to {_MAX_LIMIT}")
    get = request.query.get
    return LogQuery(query_id=get("query_id"), client=get("client"), service=get("service"),
                    user_id=get("user_id"), since=_time(request, "since"),
                    until=_time(request, "until")), limit


def _record_json(r: StoredRecord) -> dict[str, Any]:
    e = r.entry
    return {"sequence": r.sequence, "created_at": format_time(e.created_at), "kind": e.kind,
            "direction": e.direction, "status": e.status, "error_code": e.error_code,
            "query_id": e.query_id, "client": e.client, "service": e.service,
            "user_id": e.user_id, "issue": e.issue, "record_hash": r.record_hash,
            "batch": None if r.stamp is None else r.stamp.batch_id}


async def _audited(request: web.Request, actor: str, action: str, data: dict[str, Any]) -> None:
    ctx = request.app[ADMIN]
    await asyncio.to_thread(ctx.store.record, actor, action, data, ctx.clock())


async def search_records(request: web.Request) -> web.Response:
    who = authorize(request, PERMISSION)
    query, limit = _query(request)
    records = await request.app[AUDIT].log.find(query, limit)
    criteria = dict(request.query)
    await _audited(request, who.subject, "messagelog.search",
                   {"criteria": criteria, "records": len(records)})
    return web.json_response([_record_json(r) for r in records])


async def export_evidence(request: web.Request) -> web.Response:
    who = authorize(request, PERMISSION)
    query_id = request.match_info["query_id"]
    exported = await export_query(request.app[AUDIT].log, query_id)
    await _audited(request, who.subject, "messagelog.export",
                   {"query_id": query_id, "records": 0 if exported is None else exported[1]})
    if exported is None:
        raise XRoadError(f"no record of query {query_id!r} in the message log",
                         code="admin.not_found")
    data, count, unstamped = exported
    return web.Response(body=data, content_type="application/vnd.etsi.asic-e+zip", headers={
        "Content-Disposition": 'attachment; filename="query-evidence.asice"',
        "X-Xchange-Records": str(count), "X-Xchange-Unstamped": str(unstamped)})


async def verify_log(request: web.Request) -> web.Response:
    who = authorize(request, PERMISSION)
    ctx = request.app[AUDIT]
    try:
        trust = await asyncio.to_thread(ctx.trust)
    except (OSError, XRoadError) as exc:
        raise XRoadError("the server's trust anchors cannot be read",
                         code="server.serverproxy.internal_error") from exc
    report = await verify_live_log(ctx.log, ctx.engine, trust, subject=ctx.subject)
    failure = report.failure
    body = {
        "ok": report.ok,
        "records": report.records,
        "first_sequence": report.chain.first_sequence if report.chain else None,
        "last_sequence": report.chain.last_sequence if report.chain else None,
        "signatures_verified": report.signatures_verified,
        "stamps_verified": report.stamps_verified,
        "unstamped": report.unstamped,
        "rejected": report.rejected,
        "failure": None if failure is None else {
            "record": getattr(failure, "sequence", None), "code": failure.code,
            "message": failure.message},
        "report": list(report.lines()),
    }
    await _audited(request, who.subject, "messagelog.verify",
                   {"ok": report.ok, "records": body["records"], "failure": body["failure"]})
    return web.json_response(body)


def add_audit_routes(app: web.Application, ctx: AuditContext) -> None:
    """Add the audit endpoints to an admin app made by
    :func:`security_server.admin_api.create_admin_app`."""
    app[AUDIT] = ctx
    app.router.add_get("/api/v1/messagelog/records", search_records)
    app.router.add_get("/api/v1/messagelog/queries/{query_id}/evidence", export_evidence)
    app.router.add_get("/api/v1/messagelog/verification", verify_log)
