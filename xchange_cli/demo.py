"""``xchange demo``: a whole federation on this machine, and a few queries through it.

Builds a throwaway federation (see :mod:`xchange_cli.federation`), starts the registry, two
security servers and a provider system as separate processes, sends cross-agency queries
through the consumer's security server exactly as an agency's system would (X-Road REST),
explains each answer, verifies both message logs, and stops everything.

``--serve`` keeps it running until interrupted and writes ``demo.json`` describing it.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xchange_cli.audit import check_log
from xchange_cli.federation import (
    Federation,
    RunningFederation,
    build_federation,
    temporary_root,
)

__all__ = ["Answer", "query", "run_demo"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def query(base_url: str, service: str, path: str, client: str,
          headers: dict[str, str] | None = None, method: str = "GET",
          body: bytes | None = None) -> Answer:
    """Call ``/r1/{service}{path}`` on a security server's client proxy, as an IS does."""
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{base_url}/r1/{service}{path}", data=body, method=method,
        headers={"X-Road-Client": client, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return Answer(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, dict(err.headers.items()), err.read())


def _say(text: str = "") -> None:
    print(text, flush=True)


def _show(title: str, answer: Answer) -> None:
    _say(f"  -> HTTP {answer.status}")
    received = {k.lower(): v for k, v in answer.headers.items()}
    for name in ("X-Road-Id", "X-Road-Client", "X-Road-Service", "X-Road-Request-Hash",
                 "X-Road-Error", "X-Xchange-Data-Subjects"):
        if name.lower() in received:
            value = received[name.lower()]
            _say(f"     {name}: {value[:60]}{'...' if len(value) > 60 else ''}")
    text = answer.body.decode("utf-8", "replace")
    _say(f"     body: {text[:200]}")


def _scenario(fed: Federation) -> bool:
    consumer = fed.servers[1]
    persons = str(fed.services["persons"])
    ok = True
    _say("Federation 'DEMO' is up:")
    _say(f"  registry (central server)       {fed.registry_url}/globalconf  (signed, expiring)")
    for s in fed.servers:
        _say(f"  {s.agency.name:<30}  security server {s.agency.server}")
        _say(f"  {'':<30}  client proxy {s.client_proxy_url}, "
             f"server proxy https://127.0.0.1:{s.server_proxy_port} (mutual TLS)")
    _say(f"  provider system                 http://127.0.0.1:{fed.adapter_port} "
         "(an adapter publishing the population register's SQLite database:")
    _say(f"  {'':<30}  {fed.adapter_config})")
    _say()

    _say(f"1. {fed.allowed_client} asks the Population Register for person 38001010001")
    _say(f"   GET {consumer.client_proxy_url}/r1/{persons}/persons/38001010001")
    a = query(consumer.client_proxy_url, persons, "/persons/38001010001",
              str(fed.allowed_client), {"X-Road-UserId": "EE38001010001",
                                        "X-Road-Issue": "benefit-application-42"})
    _show("allowed", a)
    ok &= a.status == 200 and a.json().get("name") == "Mari Maasikas"
    _say("   The request was signed by the Social Insurance Board, checked and logged by both")
    _say("   security servers, answered by the adapter from the register's database, and the")
    _say("   answer was signed by the Population Register Agency and bound to the request by")
    _say("   X-Road-Request-Hash.  X-Xchange-Data-Subjects names whose data it holds; the")
    _say("   provider's security server keeps it in its log record.")
    _say()

    _say("2. The same subsystem searches by name, a page of at most 3 (typed, bound parameters:")
    _say("   no SQL is ever built from request text)")
    a = query(consumer.client_proxy_url, persons, "/persons?name=Tamm&limit=3",
              str(fed.allowed_client))
    _show("search", a)
    ok &= a.status == 200 and len(a.json()["items"]) == 3 and a.json()["has_more"]
    _say()

    _say(f"3. {fed.denied_client} (registered, but never granted access) tries the same")
    a = query(consumer.client_proxy_url, persons, "/persons/38001010001", str(fed.denied_client))
    _show("denied", a)
    ok &= a.status == 403 and a.headers.get("X-Road-Error") == "server.serverproxy.access_denied"
    _say("   The provider's security server refused it: access is denied by default.")
    _say()

    _say("4. A caller names a service that does not exist")
    a = query(consumer.client_proxy_url, persons.replace("/persons", "/nosuchservice"),
              "/x", str(fed.allowed_client))
    _show("unknown", a)
    ok &= a.status == 404
    _say()

    _say("5. Both security servers verify their message logs")
    for s in fed.servers:
        result = check_log(s.config)
        count = result.chain.count if result.chain else 0
        _say(f"   {s.agency.server}: {count} records, hash chain intact, "
             f"{result.signatures_verified} signatures verified, "
             f"{result.rejected} rejected, {len(result.failures)} failures")
        ok &= result.ok and count >= 4
    _say()
    return ok


def run_demo(*, serve: bool = False, directory: Path | None = None) -> int:
    started = time.monotonic()
    with temporary_root(directory) as root:
        fed = build_federation(root / "federation", now=datetime.now(UTC), adapter=True)
        with RunningFederation(fed):
            if serve:
                (root / "demo.json").write_text(json.dumps(fed.describe(), indent=2) + "\n")
                _say(f"federation running; described in {root / 'demo.json'}; Ctrl-C stops it")
                stop = {signal.SIGINT, signal.SIGTERM}
                signal.pthread_sigmask(signal.SIG_BLOCK, stop)
                signal.sigwait(stop)
                return 0
            ok = _scenario(fed)
    _say(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s; "
         "all processes stopped.")
    return 0 if ok else 1
