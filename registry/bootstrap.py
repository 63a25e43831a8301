"""Starting a registry from nothing, and loading an old registry data file.

:func:`init_registry` is what ``xchange registry init`` does: migrate the database, record
the instance, generate the first configuration-signing key and the admin-token key.  It is
idempotent: run again, it changes nothing that exists.

:func:`import_data` loads a data file of the file-based registry
(``schemas/registry-data.schema.json``) through :class:`~registry.service.RegistryService`,
so every object gets the same checks and audit records as if an officer had entered it.
Auth certificates must be given as files (``auth_certs``): a bare hash cannot be checked
against the approved CAs, so ``auth_cert_hashes`` are refused.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
from sqlalchemy.engine import Engine
from sqlmodel import Session

from certs.keys import load_certificate
from registry.config import ConfigError, RegistryConfig
from registry.db import migrate
from registry.keys import KeyStore
from registry.service import RegistryService
from schemas import load_json_schema
from xchange.errors import XRoadError
from xchange.identifiers import ClientId, SecurityServerId

__all__ = ["import_data", "init_registry"]


def init_registry(config: RegistryConfig, engine: Engine, instance: str, *, actor: str,
                  now: datetime) -> dict[str, Any]:
    """Prepare an empty (or half-prepared) registry for ``instance``; return its settings."""
    keys = KeyStore.from_config(config)
    keys.admin_key(create=True)  # first: a registry that cannot keep keys is not started
    migrate(engine)
    with Session(engine) as session:
        svc = RegistryService(session, actor=actor, now=now)
        svc.initialise(instance)
        if not svc.conf_keys("active"):
            svc.add_conf_key(keys.new_conf_key(instance, now))
        settings = svc.get_settings()
        session.commit()
    return settings


def _load_cert(path: Path, what: str) -> Any:
    try:
        return load_certificate(path)
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{what}: cannot load a PEM certificate from {path}: {exc}") from exc


def import_data(svc: RegistryService, data_file: Path) -> int:
    """Load ``data_file`` into the registry of ``svc`` (same instance); return the number
    of objects created.  Raises ConfigError or AdminError; the caller commits."""
    try:
        doc: Any = json.loads(data_file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{data_file}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{data_file}: not valid JSON: {exc}") from exc
    validator = jsonschema.Draft202012Validator(load_json_schema("registry-data.schema.json"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ConfigError(f"{data_file}: at {where}: {error.message}")
    if doc["instance"] != svc.instance:
        raise ConfigError(f"{data_file} is for instance {doc['instance']}, "
                          f"this registry is {svc.instance}")
    base, count = data_file.parent, 0
    try:
        if "settings" in doc:
            svc.update_settings(doc["settings"])
        for ca in doc.get("approved_cas", ()):
            urls = [ca["ocsp_url"]] if ca.get("ocsp_url") else []
            svc.add_ca(ca["name"], _load_cert(base / ca["certificate"], ca["name"]), urls)
        for tsa in doc.get("approved_tsas", ()):
            svc.add_tsa(tsa["name"], tsa["url"],
                        _load_cert(base / tsa["certificate"], tsa["name"]))
        classes = {c["code"] for c in svc.list_member_classes()}
        for m in doc["members"]:
            member = ClientId.parse(m["id"])
            if member.member_class not in classes:
                svc.create_member_class(member.member_class)
                classes.add(member.member_class)
            svc.create_member(member.member_class, member.member_code, m["name"])
            for code in m.get("subsystems", ()):
                svc.create_subsystem(member, code)
            count += 1
        for s in doc.get("security_servers", ()):
            if s.get("auth_cert_hashes"):
                raise ConfigError(f"{s['id']}: auth_cert_hashes cannot be imported; give the "
                                  "certificates as files (auth_certs)")
            server = SecurityServerId.parse(s["id"])
            svc.create_server(server, s["address"])
            for path in s.get("auth_certs", ()):
                svc.add_auth_cert(server, _load_cert(base / path, s["id"]))
            for client in s.get("clients", ()):
                svc.add_client(server, ClientId.parse(client))
            count += 1
        for g in doc.get("global_groups", ()):
            code = g["id"].split("/", 1)[1]
            svc.create_group(code, g.get("description", ""))
            for client in g.get("members", ()):
                svc.add_group_member(code, ClientId.parse(client))
            count += 1
    except XRoadError as exc:
        raise ConfigError(f"{data_file}: {exc.message}") from exc
    return count
