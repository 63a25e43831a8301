"""The audit endpoints of the admin API on a real socket: the auditor role searches, exports
and verifies the message log; other roles cannot; every audit access is in the audit log."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from security_server.admin_api import AdminContext, audience_for, create_admin_app
from security_server.audit_api import AuditContext, add_audit_routes
from security_server.db import create_db_engine, create_tables
from security_server.directory import Directory, StoreDirectory
from security_server.messagelog import MessageLog
from security_server.migrate import upgrade
from security_server.store import ServerStore
from tests.auditkit import AuditPki, fill_log
from xchange.adminauth import issue_token
from xchange.evidence import read_bundle

SERVER = "TEST/GOV/1001/ss1"


@dataclass
class Api:
    url: str
    key: ec.EllipticCurvePrivateKey
    database: Path

    def token(self, *roles: str, subject: str = "audrey") -> str:
        return issue_token(self.key, subject=subject, roles=roles,
                           audience=audience_for(SERVER), issued_at=datetime.now(UTC),
                           lifetime=timedelta(hours=1))

    async def get(self, path: str, token: str | None) -> tuple[int, bytes, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.get(self.url + path,
                                                       headers=headers) as resp:
            body = await resp.read()
            is_json = resp.content_type == "application/json"
            return resp.status, body, json.loads(body) if is_json else None


@pytest.fixture
async def api(tmp_path: Path, audit_pki: AuditPki) -> AsyncIterator[Api]:
    database = tmp_path / "ss.db"
    engine = create_db_engine(f"sqlite:///{database}")
    upgrade(engine)
    create_tables(engine)
    log = MessageLog(engine)
    await fill_log(log, audit_pki, 2, batch=3, stamp_all=False)  # records 1-3 stamped, 4 not
    key = ec.generate_private_key(ec.SECP256R1())
    directory = Directory(StoreDirectory(ServerStore(engine), recheck_seconds=3600))
    app = create_admin_app(AdminContext(ServerStore(engine), directory, (key.public_key(),),
                                        audience_for(SERVER), lambda: datetime.now(UTC)))
    add_audit_routes(app, AuditContext(log, engine, lambda: audit_pki.trust,
                                       subject=f"live message log of {SERVER}"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Api(f"http://127.0.0.1:{runner.addresses[0][1]}", key, database)
    finally:
        await runner.cleanup()
        log.close()
        engine.dispose()


async def audit_log(api: Api) -> list[dict[str, Any]]:
    status, _, doc = await api.get("/api/v1/audit", api.token("auditor"))
    assert status == 200
    assert isinstance(doc, list)
    return [d for d in doc if d["action"].startswith("messagelog.")]


async def test_only_the_auditor_role_may_audit(api: Api) -> None:
    for path in ("/api/v1/messagelog/records", "/api/v1/messagelog/verification",
                 "/api/v1/messagelog/queries/q-1/evidence"):
        status, _, doc = await api.get(path, None)
        assert (status, doc["type"]) == (401, "admin.unauthorized")
        for role in ("observer", "service-administrator", "system-administrator"):
            status, _, doc = await api.get(path, api.token(role))
            assert (status, doc["type"]) == (403, "admin.forbidden"), role
    assert await audit_log(api) == []


async def test_search_export_and_verify_are_each_audited(api: Api) -> None:
    token = api.token("auditor")
    status, _, records = await api.get("/api/v1/messagelog/records?user_id=EE12345", token)
    assert status == 200
    assert [(r["sequence"], r["kind"], r["batch"]) for r in records] == [
        (1, "request", 1), (3, "request", 1)]
    status, body, _ = await api.get("/api/v1/messagelog/queries/q-1/evidence", token)
    assert status == 200
    evidence = read_bundle(body)
    assert [e.record.sequence for e in evidence] == [1, 2]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("mimetype") == b"application/vnd.etsi.asic-e+zip"
    status, _, report = await api.get("/api/v1/messagelog/verification", token)
    assert status == 200
    assert (report["ok"], report["records"], report["stamps_verified"],
            report["unstamped"], report["failure"]) == (True, 4, 3, 1, None)
    assert report["report"][-1] == "OK: everything verifies"

    logged = await audit_log(api)
    assert [(d["actor"], d["action"]) for d in logged] == [
        ("audrey", "messagelog.search"), ("audrey", "messagelog.export"),
        ("audrey", "messagelog.verify")]
    assert logged[0]["data"] == {"criteria": {"user_id": "EE12345"}, "records": 2}
    assert logged[1]["data"] == {"query_id": "q-1", "records": 2}
    assert logged[2]["data"] == {"ok": True, "records": 4, "failure": None}


async def test_a_tampered_log_fails_verification_naming_the_record(api: Api) -> None:
    with sqlite3.connect(api.database) as db:
        db.execute("UPDATE message_log SET user_id = 'EE999' WHERE sequence = 3")
    status, _, report = await api.get("/api/v1/messagelog/verification", api.token("auditor"))
    assert status == 200 and report["ok"] is False
    assert report["failure"]["record"] == 3
    assert report["failure"]["code"] == "server.messagelog.chain_broken"
    assert (await audit_log(api))[-1]["data"]["ok"] is False


async def test_unknown_queries_and_bad_criteria(api: Api) -> None:
    token = api.token("auditor")
    status, _, doc = await api.get("/api/v1/messagelog/queries/nope/evidence", token)
    assert (status, doc["type"]) == (404, "admin.not_found")
    assert (await audit_log(api))[-1]["data"] == {"query_id": "nope", "records": 0}
    for query, message in (("limit=0", "limit must be 1 to 1000"),
                           ("since=yesterday", "since is not an ISO 8601 time"),
                           ("until=2026-01-01T00:00:00", "until needs a time zone"),
                           ("body=x", "unknown parameter(s): body")):
        status, _, doc = await api.get(f"/api/v1/messagelog/records?{query}", token)
        assert (status, doc["type"]) == (400, "admin.bad_request"), query
        assert message in doc["message"]
