"""The global configuration as the registry's database describes it.

:func:`build_conf` reads everything security servers need from the registry's tables and
returns a :class:`~xchange.globalconf.GlobalConf`, whose constructor checks consistency
(owners and clients registered, no auth certificate registered twice).  What is published:

* members with their subsystems;
* security servers that have at least one auth certificate (a server whose first
  certificate is still pending approval cannot be reached anyway), with their *enabled*
  clients;
* global groups, approved CAs (the first OCSP URL of each; the format has one), approved
  TSAs, the federation settings;
* ``signing_keys``: the active and announced configuration-signing keys (key rotation).

:func:`content_hash` identifies what a configuration says regardless of its version and
times, so the publisher can tell a change of data from a mere re-signing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from sqlmodel import col, select

from registry.models import (
    ApprovedCARow,
    ApprovedTSARow,
    AuthCertRow,
    GlobalGroupMemberRow,
    GlobalGroupRow,
    MemberRow,
    SecurityServerRow,
    ServerClientRow,
    SubsystemRow,
)
from registry.service import RegistryService
from xchange.canonical import canonical_json
from xchange.globalconf import (
    ApprovedCA,
    ApprovedTSA,
    GlobalConf,
    GlobalGroupInfo,
    MemberInfo,
    SecurityServerInfo,
)
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId

__all__ = ["build_conf", "content_hash"]


def build_conf(svc: RegistryService, *, version: int, now: datetime) -> GlobalConf:
    """The configuration of the data in ``svc``'s session, version ``version``, made ``now``.

    Raises :class:`~xchange.errors.InvalidGlobalConfError` if the data is inconsistent.
    """
    session, instance = svc.session, svc.instance
    settings = svc.federation_settings()
    generated_at = now.astimezone(UTC).replace(microsecond=0)

    members: dict[int, ClientId] = {}
    subsystems: dict[int, ClientId] = {}
    member_infos = []
    for m in session.exec(select(MemberRow).order_by(col(MemberRow.member_class),
                                                      col(MemberRow.code))):
        assert m.id is not None
        member = members[m.id] = ClientId(instance, m.member_class, m.code)
        codes = []
        for sub in session.exec(select(SubsystemRow).where(SubsystemRow.member_id == m.id)
                                .order_by(col(SubsystemRow.code))):
            assert sub.id is not None
            subsystems[sub.id] = member.subsystem_of(sub.code)
            codes.append(sub.code)
        member_infos.append(MemberInfo(member, m.name, tuple(codes)))

    servers = []
    for s in session.exec(select(SecurityServerRow).order_by(col(SecurityServerRow.id))):
        hashes = tuple(session.exec(select(AuthCertRow.cert_hash).where(
            AuthCertRow.server_id == s.id).order_by(col(AuthCertRow.id))))
        if not hashes:
            continue
        clients = tuple(sorted(subsystems[c.subsystem_id] for c in session.exec(
            select(ServerClientRow).where(ServerClientRow.server_id == s.id,
                                          col(ServerClientRow.enabled).is_(True)))))
        servers.append(SecurityServerInfo(SecurityServerId(members[s.owner_id], s.code),
                                          s.address, hashes, clients))

    groups = []
    for g in session.exec(select(GlobalGroupRow).order_by(col(GlobalGroupRow.code))):
        group_members = session.exec(select(GlobalGroupMemberRow.client_id).where(
            GlobalGroupMemberRow.group_id == g.id).order_by(col(GlobalGroupMemberRow.client_id)))
        groups.append(GlobalGroupInfo(GlobalGroupId(instance, g.code), g.description,
                                      tuple(ClientId.parse(c) for c in group_members)))

    cas = tuple(
        ApprovedCA(ca.name, x509.load_der_x509_certificate(ca.certificate),
                   ca.ocsp_urls[0] if ca.ocsp_urls else None)
        for ca in session.exec(select(ApprovedCARow).order_by(col(ApprovedCARow.id))))
    tsas = tuple(
        ApprovedTSA(t.name, t.url, x509.load_der_x509_certificate(t.certificate))
        for t in session.exec(select(ApprovedTSARow).order_by(col(ApprovedTSARow.id))))

    return GlobalConf(
        instance=instance,
        version=version,
        generated_at=generated_at,
        expires_at=generated_at + timedelta(seconds=settings.conf_expiry_seconds),
        members=tuple(member_infos),
        security_servers=tuple(servers),
        global_groups=tuple(groups),
        approved_cas=cas,
        approved_tsas=tsas,
        settings=settings,
        signing_keys=tuple(svc.conf_keys("active", "announced")),
    )


def content_hash(conf: GlobalConf) -> str:
    """SHA-256 of what ``conf`` says, without its version and times."""
    payload = conf.to_payload()
    for volatile in ("version", "generated_at", "expires_at"):
        del payload[volatile]
    return hashlib.sha256(canonical_json(payload)).hexdigest()
