"""ASiC-E containers: layout written, and a reader that refuses hostile ZIP files."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from xchange.asic import (
    ASIC_E_MIMETYPE,
    MANIFEST_NAME,
    Limits,
    manifest_xml,
    read_container,
    write_container,
)
from xchange.errors import BadRequestError

TYPES = {"data/a.json": "application/json", "data/b": "application/octet-stream"}
OBJECTS = [("data/a.json", "application/json", b'{"a":1}'),
           ("data/b", "application/octet-stream", b"\x00\x01" * 100)]


def read(data: bytes, limits: Limits | None = None) -> dict[str, bytes]:
    return dict(read_container(data, media_type_of=TYPES.get, limits=limits).objects)


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]], *,
           compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


def stored_mimetype() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("mimetype")
    info.compress_type = zipfile.ZIP_STORED
    return info


def manifest_for(*names: str) -> bytes:
    return manifest_xml([(n, TYPES[n]) for n in names])


def test_layout_round_trip_and_determinism() -> None:
    data = write_container(OBJECTS)
    assert data == write_container(OBJECTS)
    # mimetype first, stored, readable at offset 30 + len("mimetype") as ASiC wants
    assert data[:4] == b"PK\x03\x04"
    assert data[30:38] == b"mimetype"
    assert data[38:38 + len(ASIC_E_MIMETYPE)] == ASIC_E_MIMETYPE.encode()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names == ["mimetype", "data/a.json", "data/b", MANIFEST_NAME]
        manifest = zf.read(MANIFEST_NAME).decode()
    assert 'manifest:full-path="data/a.json" manifest:media-type="application/json"' in manifest
    assert read(data) == {"data/a.json": b'{"a":1}', "data/b": b"\x00\x01" * 100}


@pytest.mark.parametrize("name", ["../evil", "/abs", "a\\b", "C:/x", "a//b", ".hidden",
                                  "a/../b", "sp ace", "ü", ""])
def test_writer_refuses_unsafe_names(name: str) -> None:
    with pytest.raises((BadRequestError, ValueError)):
        write_container([(name, "text/plain", b"x")])


@pytest.mark.parametrize("name", ["mimetype", "META-INF/x.xml"])
def test_writer_refuses_reserved_names(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_container([(name, "text/plain", b"x")])


def refused(data: bytes, match: str, limits: Limits | None = None) -> None:
    with pytest.raises(BadRequestError, match=match) as info:
        read(data, limits)
    assert info.value.code == "server.messagelog.bad_container"


def test_reader_refuses_non_zip_and_empty() -> None:
    refused(b"not a zip", "not a ZIP file")
    refused(zip_of([]), "empty ZIP")


def test_reader_refuses_a_wrong_or_misplaced_mimetype() -> None:
    manifest = manifest_for()
    refused(zip_of([("data/b", b"x"), (stored_mimetype(), ASIC_E_MIMETYPE.encode())]),
            "first entry must be mimetype")
    refused(zip_of([("mimetype", ASIC_E_MIMETYPE.encode()), (MANIFEST_NAME, manifest)]),
            "stored uncompressed")
    refused(zip_of([(stored_mimetype(), b"application/zip"), (MANIFEST_NAME, manifest)]),
            "mimetype is not")
    same_length = ASIC_E_MIMETYPE.replace("e+zip", "x+zip").encode()
    refused(zip_of([(stored_mimetype(), same_length), (MANIFEST_NAME, manifest)]),
            "mimetype is not")


def test_reader_refuses_prepended_data() -> None:
    refused(b"#!/bin/sh\n" + write_container(OBJECTS), "at the start of the file")


def test_reader_refuses_path_traversal_and_unknown_entries() -> None:
    base: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        (stored_mimetype(), ASIC_E_MIMETYPE.encode())]
    refused(zip_of([*base, ("../../etc/passwd", b"x")]), "unsafe entry name")
    refused(zip_of([*base, ("data/c", b"x"), (MANIFEST_NAME, manifest_for())]),
            "unexpected entry 'data/c'")
    refused(zip_of([*base, ("data/", b"")]), "unsafe entry name")


def test_reader_refuses_duplicate_names() -> None:
    base: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        (stored_mimetype(), ASIC_E_MIMETYPE.encode())]
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = zip_of([*base, ("data/b", b"1"), ("data/b", b"2"),
                       (MANIFEST_NAME, manifest_for("data/b"))])
    refused(data, "appears twice")


def test_reader_refuses_a_missing_or_lying_manifest() -> None:
    base: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        (stored_mimetype(), ASIC_E_MIMETYPE.encode()), ("data/b", b"x")]
    refused(zip_of(base), "manifest.xml is missing")
    refused(zip_of([*base, (MANIFEST_NAME, manifest_for())]), "does not list exactly")
    refused(zip_of([*base, (MANIFEST_NAME, manifest_for("data/b") + b"<!-- -->")]),
            "does not list exactly")


def test_reader_refuses_zip_bombs_by_declared_size_and_ratio() -> None:
    base: list[tuple[str | zipfile.ZipInfo, bytes]] = [
        (stored_mimetype(), ASIC_E_MIMETYPE.encode())]
    bomb = zip_of([*base, ("data/b", b"\x00" * 2_000_000), (MANIFEST_NAME, manifest_for("data/b"))])
    refused(bomb, "compressed more than 200:1")
    refused(bomb, "larger than 1000 bytes", Limits(max_entry_bytes=1000))
    refused(write_container(OBJECTS), "more than 100 bytes", Limits(max_total_bytes=100))
    refused(write_container(OBJECTS), "entries, more than 2", Limits(max_entries=2))


def test_reader_refuses_an_entry_that_lies_about_its_size() -> None:
    data = bytearray(write_container([("data/b", "application/octet-stream", b"y" * 5000)]))
    # Shrink the declared uncompressed size in the central directory (and local header).
    for sig in (b"PK\x01\x02", b"PK\x03\x04"):
        start = 0
        while (at := data.find(sig, start)) != -1:
            offset = at + (24 if sig == b"PK\x01\x02" else 22)
            name_at = at + (46 if sig == b"PK\x01\x02" else 30)
            if data[name_at:name_at + 6] == b"data/b":
                data[offset:offset + 4] = struct.pack("<I", 100)
            start = at + 4
    refused(bytes(data), "larger than it declares|cannot be read")


def test_reader_refuses_encrypted_entries() -> None:
    data = bytearray(write_container(OBJECTS))
    at = data.find(b"PK\x01\x02", 0)
    at = data.find(b"PK\x01\x02", at + 4)  # data/a.json's central entry
    data[at + 8] |= 0x1
    refused(bytes(data), "encrypted|not a ZIP|cannot be read")
