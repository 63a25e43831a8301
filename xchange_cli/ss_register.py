"""``xchange ss register ...``: a security server's management requests to the registry.

Each command builds a request (:mod:`xchange.management`), signs it with the key of the
member it concerns -- taken from the server's own configuration (``[[keys.signing]]``, a key
file under the ``[keys]`` passphrase or a PKCS#11 token) -- and, to register the server's
auth certificate, with the auth key as well; then posts it
to the registry's ``/management/requests`` and prints the request id and its state.
``status REQUEST_ID`` asks for the state later.  ``services --client X`` publishes a hosted
client's services to the registry's catalogue (:mod:`security_server.catalogue`), as the
running server does by itself after each change, and records how it went in the store.

The registry URL is ``--registry``, or else ``[registry] url`` of the configuration, or
else the anchor's download URL without its last path segment.  A fresh server has no
anchor yet; its first request (the auth certificate) is what makes it known, and the
officer hands out the anchor (``xchange registry anchor``).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xchange_cli.commands import Command

__all__ = ["register"]


def _registry_url(args: argparse.Namespace, config: Any) -> str:
    if args.registry:
        return str(args.registry)
    from security_server.catalogue import PublicationError, registry_url

    try:
        return registry_url(config)
    except PublicationError as exc:
        raise ValueError("no anchor yet: give --registry URL") from exc


def _send(args: argparse.Namespace) -> int:
    """Build, sign and post an ``args.request_kind`` request with ``args.request_fields``."""
    from security_server.config import SecurityServerConfig
    from security_server.keys import load_auth_key, load_keys
    from xchange.management import new_request, sign_request
    from xchange_cli.registry_admin import api_call

    kind = args.request_kind
    config = SecurityServerConfig.from_file(args.config).from_env()
    request = new_request(kind, config.server_id, now=datetime.now(UTC),
                          **args.request_fields(args, config))
    signer = request.required_signer()
    keys = load_keys(config)
    try:
        if signer not in keys.identities:
            raise ValueError(f"this server holds no signing key for {signer}, "
                             f"whose signature a {kind} request needs")
        auth_key = load_auth_key(config) if kind == "auth_cert_register" else None
        envelope = sign_request(request, keys.identities[signer], auth_key)
    finally:
        keys.close()
    answer = api_call(_registry_url(args, config), None, "POST",
                      "/management/requests", json.loads(envelope))
    print(json.dumps(answer, indent=2))
    return 0


def _auth_fields(args: argparse.Namespace, config: Any) -> dict[str, str]:
    from certs.keys import load_certificates
    from xchange.management import cert_text

    address = args.address or f"{config.server_proxy.host}:{config.server_proxy.port}"
    return {"auth_cert": cert_text(load_certificates(config.auth_cert)[0]), "address": address}


def _status(args: argparse.Namespace) -> int:
    from security_server.config import SecurityServerConfig
    from xchange_cli.registry_admin import api_call

    config = SecurityServerConfig.from_file(args.config)
    path = "/management/requests/" + urllib.parse.quote(args.request_id, safe="")
    print(json.dumps(api_call(_registry_url(args, config), None, "GET", path), indent=2))
    return 0


def _services(args: argparse.Namespace) -> int:
    """Publish a client's services to the registry's catalogue now, from the configuration
    store (the running server does this by itself after each change)."""
    import asyncio

    from security_server.catalogue import (
        CataloguePublisher,
        PublicationError,
        build_catalogue,
        publication_json,
    )
    from security_server.config import SecurityServerConfig
    from security_server.db import create_db_engine
    from security_server.keys import load_keys
    from security_server.migrate import upgrade
    from security_server.store import ServerStore
    from xchange.catalogue import catalogue_json
    from xchange.identifiers import ClientId

    config = SecurityServerConfig.from_file(args.config).from_env()
    client = ClientId.parse(args.client)
    url = _registry_url(args, config)
    engine = create_db_engine(config.database_url)
    try:
        upgrade(engine)
        store = ServerStore(engine)
        store.client(client)  # a local client, or admin.not_found
        keys = load_keys(config)
        try:
            publisher = CataloguePublisher(store, config.server_id, keys.identities,
                                           lambda: url, clock=lambda: datetime.now(UTC))
            row = asyncio.run(publisher.publish(client))
        finally:
            keys.close()
        result = {**publication_json(row),
                  "catalogue": catalogue_json(build_catalogue(store, client))}
    finally:
        engine.dispose()
    print(json.dumps(result, indent=2))
    if row.state == "failed":
        raise PublicationError(row.last_error or "not published")
    return 0


_COMMANDS: list[tuple[str, str, str, list[str],
                      Callable[[argparse.Namespace, Any], dict[str, str]]]] = [
    ("auth-cert", "auth_cert_register",
     "register this server's auth certificate (the first one bootstraps the server)",
     ["--address"], _auth_fields),
    ("auth-cert-delete", "auth_cert_delete", "unregister an auth certificate",
     ["--cert-hash"], lambda a, c: {"cert_hash": a.cert_hash}),
    ("address", "address_change", "change this server's registered address",
     ["--address"], lambda a, c: {"address": a.address}),
    ("client", "client_register", "register a subsystem as a client of this server",
     ["--client"], lambda a, c: {"client": a.client}),
    ("client-delete", "client_delete", "unregister a client", ["--client"],
     lambda a, c: {"client": a.client}),
    ("client-enable", "client_enable", "enable a client", ["--client"],
     lambda a, c: {"client": a.client}),
    ("client-disable", "client_disable", "disable a client", ["--client"],
     lambda a, c: {"client": a.client}),
    ("owner", "owner_change", "hand this server to another member (signed by the new owner)",
     ["--new-owner"], lambda a, c: {"new_owner": a.new_owner}),
]


def register(command: Command) -> None:
    """Add the ``ss register`` subcommands through ``main``'s ``command`` helper."""
    for name, kind, help_text, options, fields in _COMMANDS:
        p = command(["ss", "register", name], "xchange_cli.ss_register:_send", help_text)
        p.set_defaults(request_kind=kind, request_fields=fields)
        p.add_argument("--config", type=Path, required=True, help="security server TOML file")
        p.add_argument("--registry", default=None, help="registry base URL")
        for option in options:
            required = not (name == "auth-cert" and option == "--address")
            p.add_argument(option, required=required, default=None)
    p = command(["ss", "register", "services"], "xchange_cli.ss_register:_services",
                "publish a client's services to the registry's service catalogue now")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    p.add_argument("--registry", default=None, help="registry base URL")
    p.add_argument("--client", required=True, help="the subsystem whose services to publish")
    p = command(["ss", "register", "status"], "xchange_cli.ss_register:_status",
                "the state of a request sent earlier")
    p.add_argument("--config", type=Path, required=True, help="security server TOML file")
    p.add_argument("--registry", default=None, help="registry base URL")
    p.add_argument("request_id")
