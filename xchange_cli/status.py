"""``xchange ss status``: the health of a security server's trust material.

For each of the server's certificates (the TLS authentication certificate and every member
signing certificate) it shows the subject, serial, expiry, and the status and age of the OCSP
response the server keeps for it in ``state_dir/ocsp/`` (written by the running server only
after it verified the response; see :mod:`security_server.ocsp`).  Then, from the
configuration store, where publishing each client's services to the registry's catalogue
stands (:mod:`security_server.catalogue`).  It reads files and the database only, so it
works while the server is stopped.  Exit status 1 if any certificate is expired, revoked, or
has no OCSP response fresher than the federation's limit, or a catalogue publication failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp

from certs.keys import load_certificates
from security_server.confclient import CACHE_FILE
from security_server.config import SecurityServerConfig
from security_server.ocsp import OCSP_DIR
from xchange.certificates import cert_sha256
from xchange.globalconf import FederationSettings

__all__ = ["CertificateHealth", "certificate_health", "show_status"]


@dataclass(frozen=True, slots=True)
class CertificateHealth:
    label: str
    subject: str
    serial: int
    not_after: datetime
    ocsp_status: str | None
    """good, revoked or unknown; None when the server holds no response."""
    ocsp_age_seconds: float | None
    revoked_at: datetime | None = None

    def problems(self, now: datetime, max_age: float) -> list[str]:
        found = []
        if self.not_after <= now:
            found.append("certificate expired")
        if self.ocsp_status is None:
            found.append("no OCSP response")
        elif self.ocsp_status != "good":
            found.append(f"OCSP says {self.ocsp_status}")
        elif self.ocsp_age_seconds is not None and self.ocsp_age_seconds > max_age:
            found.append("OCSP response stale")
        return found


def certificate_health(config: SecurityServerConfig, now: datetime) -> list[CertificateHealth]:
    certs: list[tuple[str, x509.Certificate]] = [("auth", load_certificates(config.auth_cert)[0])]
    certs += [(str(sk.member), load_certificates(sk.cert)[0]) for sk in config.signing_keys]
    health = []
    for label, cert in certs:
        status = age = revoked_at = None
        path = config.state_dir / OCSP_DIR / f"{cert_sha256(cert)}.der"
        if path.exists():
            single = ocsp.load_der_ocsp_response(path.read_bytes())
            status = single.certificate_status.name.lower()
            age = (now - single.this_update_utc).total_seconds()
            revoked_at = single.revocation_time_utc
        health.append(CertificateHealth(label, cert.subject.rfc4514_string(), cert.serial_number,
                                        cert.not_valid_after_utc, status, age, revoked_at))
    return health


def _freshness_limit(config: SecurityServerConfig) -> int:
    """The federation's OCSP freshness limit from the configuration the server keeps (it was
    verified when stored; here it is only displayed), else the default."""
    try:
        doc = json.loads((config.state_dir / CACHE_FILE).read_bytes())
        value = doc["signed"]["settings"]["ocsp_freshness_seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return FederationSettings().ocsp_freshness_seconds
    return value if isinstance(value, int) else FederationSettings().ocsp_freshness_seconds


def catalogue_publications(config: SecurityServerConfig) -> list[dict[str, Any]] | None:
    """Each client's publication state (:func:`publication_json`); None if the store
    cannot be read (no database yet, or one older than the table)."""
    from security_server.catalogue import publication_json
    from security_server.db import create_db_engine
    from security_server.store import ServerStore
    from xchange.errors import XRoadError

    engine = create_db_engine(config.database_url)
    try:
        return [publication_json(r) for r in ServerStore(engine).publications()]
    except XRoadError:
        return None
    finally:
        engine.dispose()


def _show_catalogue(config: SecurityServerConfig) -> bool:
    """Print the publications; True if one failed."""
    rows = catalogue_publications(config)
    if rows is None:
        print("  service catalogue: publication state not readable")
        return False
    print("  service catalogue:" + ("" if rows else " nothing published yet"))
    for p in rows:
        when = p["published_at"] or "never"
        line = f"    {p['client']}: {p['state']}, {p['services']} services, published {when}"
        if p["state"] == "failed":
            line += f"\n    PROBLEM: {p['last_error']} (last tried {p['attempted_at']})"
        print(line)
    return any(p["state"] == "failed" for p in rows)


def show_status(config_path: Path) -> int:
    config = SecurityServerConfig.from_file(config_path).from_env()
    now = datetime.now(UTC)
    max_age = _freshness_limit(config)
    bad = False
    print(f"security server {config.server_id}")
    for h in certificate_health(config, now):
        days = (h.not_after - now).total_seconds() / 86400
        if h.ocsp_status is None:
            ocsp_text = "none"
        else:
            ocsp_text = f"{h.ocsp_status}, {h.ocsp_age_seconds:.0f} s old"
            if h.revoked_at is not None:
                ocsp_text += f", revoked at {h.revoked_at.isoformat()}"
        problems = h.problems(now, max_age)
        bad = bad or bool(problems)
        print(f"  {h.label}: {h.subject}\n    serial {h.serial:x}, expires "
              f"{h.not_after.isoformat()} (in {days:.0f} days)\n    OCSP: {ocsp_text}"
              + (f"\n    PROBLEM: {'; '.join(problems)}" if problems else ""))
    bad = _show_catalogue(config) or bad
    return 1 if bad else 0
