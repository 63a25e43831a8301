"""Evidence containers: one record and its evidence, written and read back."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import pytest

from tests.auditkit import AuditPki, make_log
from xchange.asic import manifest_xml, write_container
from xchange.canonical import canonical_json, parse_json
from xchange.errors import BadRequestError
from xchange.evidence import RECORD, MessageEvidence, read_evidence, write_evidence


@pytest.fixture(scope="module")
def evidence(audit_pki: AuditPki) -> MessageEvidence:
    return make_log(audit_pki, 1)[0]


def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def rebuild(files: dict[str, bytes]) -> bytes:
    """A container with these data objects (same media types as the original)."""
    types = {"message/header.json": "application/json", "message/body":
             "application/octet-stream", "message/signature.jws": "application/jose",
             "evidence/record.json": "application/json",
             "evidence/timestamp.tst": "application/vnd.etsi.timestamp-token"}
    objects = [(n, types.get(n, "application/ocsp-response"), d) for n, d in files.items()
               if n not in ("mimetype", "META-INF/manifest.xml")]
    return write_container(objects)


def test_round_trip_and_layout(evidence: MessageEvidence) -> None:
    data = write_evidence(evidence)
    assert read_evidence(data) == evidence
    files = entries(data)
    assert list(files) == ["mimetype", "message/header.json", "message/body",
                           "message/signature.jws", "evidence/ocsp-1.der",
                           "evidence/timestamp.tst", "evidence/record.json",
                           "META-INF/manifest.xml"]
    assert files["message/header.json"] == evidence.record.entry.header_part
    assert files["evidence/timestamp.tst"] == evidence.batch.token  # type: ignore[union-attr]
    assert files["evidence/ocsp-1.der"] == evidence.record.entry.ocsp_responses[0]
    doc = parse_json(files[RECORD])
    assert doc["record"]["record_hash"] == evidence.record.record_hash
    assert doc["record"]["created_at"].endswith("Z")
    assert files["META-INF/manifest.xml"].startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


def test_without_stamp_or_staples(evidence: MessageEvidence) -> None:
    record = evidence.record
    bare = MessageEvidence(record=replace(record, stamp=None,
                                          entry=replace(record.entry, ocsp_responses=())))
    data = write_evidence(bare)
    assert read_evidence(data) == bare
    assert "evidence/timestamp.tst" not in entries(data)


def test_refuses_entries_the_description_does_not_name(evidence: MessageEvidence) -> None:
    files = entries(write_evidence(evidence))
    files["evidence/ocsp-2.der"] = b"smuggled"
    with pytest.raises(BadRequestError, match=r"not described by evidence/record\.json"):
        read_evidence(rebuild(files))


@pytest.mark.parametrize(("path", "value", "match"), [
    (("record", "sequence"), "1", "sequence must be an int"),
    (("record", "kind"), "query", "kind must be one of"),
    (("record", "created_at"), "2025-01-01 00:00:00", "does not match format"),
    (("record", "prev_hash"), "ABC", "prev_hash must be 64"),
    (("timestamp", "root"), "00", "root must be 64"),
    (("timestamp", "batch"), 0, "a batch has an id >= 1"),
    (("timestamp", "path"), ["ab"], "path must be 64"),
    (("type",), "other", "is not an xchange-message-evidence"),
    (("ocsp",), ["evidence/ocsp-9.der"], "ocsp must list"),
])
def test_refuses_a_malformed_description(
    evidence: MessageEvidence, path: tuple[str, ...], value: object, match: str
) -> None:
    files = entries(write_evidence(evidence))
    doc = parse_json(files[RECORD])
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    files[RECORD] = canonical_json(doc)
    with pytest.raises(BadRequestError, match=match) as info:
        read_evidence(rebuild(files))
    assert info.value.code == "server.messagelog.bad_container"


def test_refuses_extra_keys_and_a_manifest_for_other_entries(evidence: MessageEvidence) -> None:
    files = entries(write_evidence(evidence))
    doc = parse_json(files[RECORD])
    doc["record"]["note"] = "x"
    files[RECORD] = canonical_json(doc)
    with pytest.raises(BadRequestError, match="exactly the keys"):
        read_evidence(rebuild(files))
    assert manifest_xml([]) != entries(write_evidence(evidence))["META-INF/manifest.xml"]


def test_a_record_and_its_batch_go_together(evidence: MessageEvidence) -> None:
    with pytest.raises(ValueError, match="if and only if"):
        MessageEvidence(record=evidence.record)
    with pytest.raises(ValueError, match="if and only if"):
        MessageEvidence(record=replace(evidence.record, stamp=None), batch=evidence.batch)
