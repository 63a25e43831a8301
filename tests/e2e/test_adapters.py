"""End to end: SQL databases (SQLite, PostgreSQL, MariaDB) put on the federation by one
adapter process, registered at the provider's security server from the adapter's own
OpenAPI documents, and queried by the consumer's information systems through both security
servers.

One adapter serves three services, one per database, all holding the same population
register (tests/adapters/sqlkit.py).  A database server that cannot be reached skips its
cases (fails them under CI)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.adapters.sqlkit import (
    ANALYTICS,
    BENEFITS,
    INJECTIONS,
    ROWS,
    database,
    expected,
    row_count,
    service_toml,
)
from tests.e2e.conftest import read_records
from xchange.rest import RestResponse, data_subjects_of
from xchange_cli.demo import Answer, query
from xchange_cli.federation import (
    PROVIDER,
    Federation,
    ManagedProcess,
    RunningFederation,
    free_port,
)
from xchange_cli.main import main

pytestmark = pytest.mark.e2e

DIALECTS = ("sqlite", "postgresql", "mariadb")
REGISTER = PROVIDER.subsystem("population-register")


def _cli(*args: str) -> Any:
    """``xchange ARGS`` in this process; its output, parsed as JSON when it is JSON."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    assert status == 0, err.getvalue()
    text = out.getvalue().strip()
    return json.loads(text) if text[:1] in "[{" else text


class Adapted:
    """The running adapter: which database each service code reaches."""

    def __init__(self, fed: Federation, urls: dict[str, str], skipped: dict[str, str]):
        self.fed = fed
        self.urls = urls
        self.skipped = skipped

    def service(self, kind: str) -> str:
        if kind in self.skipped:
            pytest.skip(self.skipped[kind])
        return f"{REGISTER}/register-{kind}"

    def ask(self, kind: str, path: str, client: str = BENEFITS) -> Answer:
        return query(self.fed.servers[1].client_proxy_url, self.service(kind),
                     quote(path, safe="/?&=%"), client)


@pytest.fixture(scope="module")
def adapted(federation: RunningFederation,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adapted]:
    fed = federation.federation
    root = tmp_path_factory.mktemp("adapter")
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        skipped: dict[str, str] = {}
        for kind in DIALECTS:
            try:
                urls[kind] = stack.enter_context(database(kind, root))
            except pytest.skip.Exception as exc:
                skipped[kind] = str(exc)
        port = free_port()
        config = root / "adapter.toml"
        config.write_text(f"[adapter]\nport = {port}\n\n" + "".join(
            service_toml(url, kind, code=f"register-{kind}") for kind, url in urls.items()))
        adapter = ManagedProcess("adapter", [sys.executable, "-m", "xchange_cli", "adapter",
                                             "serve", str(config)], root / "logs")
        stack.callback(adapter.stop)
        base = f"http://127.0.0.1:{port}"
        adapter.wait_until(lambda: _ok(f"{base}/health"))
        provider = fed.servers[0]
        token = _cli("ss", "admin-token", "--config", str(provider.config), "--subject",
                     "adapter-e2e", "--role", "service-administrator")
        admin = ("--url", provider.admin_url, "--token", token)
        for kind in urls:
            code = f"register-{kind}"
            desc = _cli("ss", "description", "add", str(REGISTER), "--type", "OPENAPI3",
                        "--description-url", f"{base}/{code}/openapi.json",
                        "--service-code", code, "--service-url", f"{base}/{code}", *admin)
            assert {e["path"] for e in desc["services"][0]["endpoints"]} == {
                "/persons/*", "/persons-by-id/*", "/persons", "/by-income", "/slow/*"}
            for client in (BENEFITS, ANALYTICS):
                _cli("ss", "access", "grant", f"{REGISTER}/{code}", client, *admin)
        yield Adapted(fed, urls, skipped)


def subjects(answer: Answer) -> str:
    """The data-subject header as the consumer received it (names arrive lower-cased)."""
    return {k.lower(): v for k, v in answer.headers.items()}["x-xchange-data-subjects"]


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@pytest.mark.parametrize("kind", DIALECTS)
def test_query_by_key_and_the_data_subject_in_the_provider_log(
        adapted: Adapted, kind: str) -> None:
    person = ROWS[2]
    answer = adapted.ask(kind, f"/persons/{person['code']}")
    assert answer.status == 200, answer.body
    assert answer.json() == expected(person)
    assert subjects(answer) == person["code"]
    # the provider's security server logged the response with the header, signed and
    # chained, and the auditor's search shows it
    query_id = answer.headers["X-Road-Id"]
    records = asyncio.run(read_records(adapted.fed.servers[0], query_id))
    (response,) = [r for r in records if r.entry.kind == "response"]
    logged = RestResponse.from_header_part(response.entry.header_part)
    assert data_subjects_of(logged) == (person["code"],)
    found = _cli("audit", "search", "--config", str(adapted.fed.servers[0].config),
                 "--query-id", query_id)
    assert f"response outgoing ok       {query_id}" in found
    assert f"subjects={person['code']}" in found


@pytest.mark.parametrize("kind", DIALECTS)
def test_filtered_list_with_paging(adapted: Adapted, kind: str) -> None:
    parnu = sorted((r for r in ROWS if r["city"] == "Pärnu"), key=lambda r: r["code"])
    first = adapted.ask(kind, "/persons?city=Pärnu&limit=5")
    assert first.status == 200, first.body
    assert first.json() == {"items": [expected(r) for r in parnu[:5]], "offset": 0,
                            "limit": 5, "has_more": True}
    rest = adapted.ask(kind, "/persons?city=Pärnu&limit=5&offset=5").json()
    assert rest["items"] == [expected(r) for r in parnu[5:10]]
    assert rest["has_more"] is False
    assert subjects(first).split(",") == [r["code"] for r in parnu[:5]]


@pytest.mark.parametrize("kind", DIALECTS)
def test_missing_record_and_wrong_type(adapted: Adapted, kind: str) -> None:
    missing = adapted.ask(kind, "/persons/49912319999")
    assert missing.status == 404
    assert missing.json()["type"] == "adapter.not_found"
    assert missing.json()["message"] == "no record matches the request"
    wrong = adapted.ask(kind, "/persons-by-id/abc")
    assert wrong.status == 400
    assert wrong.json() == {"type": "adapter.bad_request",
                            "message": "parameter 'id' must be an integer", "detail": None}


@pytest.mark.parametrize("kind", DIALECTS)
def test_injection_in_every_parameter_changes_nothing(adapted: Adapted, kind: str) -> None:
    service = adapted.service(kind)
    before = row_count(adapted.urls[kind])
    for path in INJECTIONS:
        answer = adapted.ask(kind, path)
        assert answer.status in (200, 400, 404), (service, path, answer.status, answer.body)
        if answer.status == 200:
            assert answer.json()["items"] == [], path
    assert row_count(adapted.urls[kind]) == before
    assert before[0] == len(ROWS)


@pytest.mark.parametrize("kind", DIALECTS)
def test_statement_exceeding_its_timeout(adapted: Adapted, kind: str) -> None:
    answer = adapted.ask(kind, f"/slow/{ROWS[0]['code']}")
    assert answer.status == 504, answer.body
    assert answer.json()["type"] == "adapter.timeout"
    assert adapted.ask(kind, f"/persons/{ROWS[0]['code']}").status == 200


@pytest.mark.parametrize("kind", DIALECTS)
def test_two_consumers_get_different_fields(adapted: Adapted, kind: str) -> None:
    path = f"/persons/{ROWS[4]['code']}"
    full = adapted.ask(kind, path, BENEFITS)
    minimal = adapted.ask(kind, path, ANALYTICS)
    assert full.json() == expected(ROWS[4])
    assert minimal.json() == expected(ROWS[4], ("code", "born", "city"))
    assert "name" not in minimal.body.decode() and "income" not in minimal.body.decode()
