"""ASiC-E containers (ETSI EN 319 162-1, "extended" form): writing and hardened reading.

An ASiC-E container is a ZIP file whose layout says what it is:

* the first entry is ``mimetype``, stored (not compressed), without extra fields, holding the
  ASCII media type ``application/vnd.etsi.asic-e+zip`` and nothing else, so that the type can
  be read at a fixed offset (EN 319 162-1 section A.1);
* the data objects follow, at any path outside ``META-INF/``;
* ``META-INF/manifest.xml`` (the OpenDocument-style manifest the standard allows) lists every
  entry with its media type.

This module knows the ZIP layer and nothing of what xchange puts in it
(:mod:`xchange.evidence` does).  It works on bytes only: no files are opened.

The reader treats its input as hostile.  It refuses, before decompressing anything:
data before the first entry, a missing or wrong ``mimetype``, encrypted or multi-volume
entries, directories, names that are absolute, hold ``..``, backslashes, drive letters or
characters outside a safe set, names repeated (also when only their case differs), more
entries than :attr:`Limits.max_entries`, entries declared larger than
:attr:`Limits.max_entry_bytes` or together larger than :attr:`Limits.max_total_bytes`, and
compression ratios above :attr:`Limits.max_ratio` (zip bombs).  While decompressing it counts
the bytes actually produced, so an entry that lies about its size is refused too.  The
manifest is not parsed: it must be byte for byte what :func:`manifest_xml` writes for the
entries found, which spares an XML parser and refuses any manifest that says something else.

Errors are :class:`~xchange.errors.BadRequestError` with code ``server.messagelog.bad_container``;
callers re-raise them with their own context.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from xchange.errors import BadRequestError

__all__ = [
    "ASIC_E_MIMETYPE",
    "BAD_CONTAINER_CODE",
    "MANIFEST_NAME",
    "AsicContainer",
    "Limits",
    "entry_names",
    "manifest_xml",
    "read_container",
    "write_container",
]

ASIC_E_MIMETYPE: Final = "application/vnd.etsi.asic-e+zip"
MANIFEST_NAME: Final = "META-INF/manifest.xml"
BAD_CONTAINER_CODE: Final = "server.messagelog.bad_container"

_MIMETYPE_NAME: Final = "mimetype"
_MANIFEST_NS: Final = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
# Path segments: letters, digits and a few punctuation marks; no leading dot.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}")
_MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9.+\-]*/[a-z0-9][a-z0-9.+\-]*")
_MAX_NAME: Final = 255
# A fixed modification time: the same content always gives the same container bytes.
_DATE_TIME: Final = (1980, 1, 1, 0, 0, 0)
_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What a reader accepts.  The defaults fit one logged message with its evidence."""

    max_entries: int = 64
    max_entry_bytes: int = 80 * 1024 * 1024
    max_total_bytes: int = 100 * 1024 * 1024
    max_ratio: int = 200
    """Largest uncompressed/compressed size of an entry (for entries over 64 KiB)."""


@dataclass(frozen=True, slots=True)
class AsicContainer:
    """A verified-layout container: its data objects by name, in ZIP order, and their types.

    ``objects`` excludes ``mimetype`` and the manifest.
    """

    objects: Mapping[str, bytes]
    media_types: Mapping[str, str]

    def get(self, name: str) -> bytes:
        """The data object ``name``; a missing one is a malformed container."""
        try:
            return self.objects[name]
        except KeyError:
            raise _bad(f"the container has no {name}") from None


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"not a valid ASiC-E container: {message}", code=BAD_CONTAINER_CODE)


def _check_name(name: str) -> None:
    if not 0 < len(name) <= _MAX_NAME:
        raise _bad(f"entry name of length {len(name)}")
    parts = name.split("/")
    if not all(_SEGMENT.fullmatch(p) for p in parts):
        raise _bad(f"unsafe entry name {name!r}")


def manifest_xml(entries: Sequence[tuple[str, str]], mimetype: str = ASIC_E_MIMETYPE) -> bytes:
    """The ``META-INF/manifest.xml`` for data objects ``(name, media type)``, in order.

    Deterministic (the reader compares bytes): fixed declaration, two-space indentation,
    one ``file-entry`` per object after the root entry ``/`` of the container's type.
    """
    # Here, not at the top: xml.sax.saxutils imports urllib.request (http.client, email),
    # which an audit of a live log, importing this module, never needs.
    from xml.sax.saxutils import quoteattr

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<manifest:manifest xmlns:manifest="{_MANIFEST_NS}" manifest:version="1.2">',
        f'  <manifest:file-entry manifest:full-path="/" '
        f'manifest:media-type="{mimetype}"/>',
    ]
    for name, media_type in entries:
        lines.append(
            f"  <manifest:file-entry manifest:full-path={quoteattr(name)} "
            f"manifest:media-type={quoteattr(media_type)}/>"
        )
    lines.append("</manifest:manifest>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_container(
    objects: Sequence[tuple[str, str, bytes]], *, mimetype: str = ASIC_E_MIMETYPE
) -> bytes:
    """An ASiC-E container holding ``objects``, each ``(name, media type, bytes)``, in order.

    Names must be safe relative paths outside ``META-INF/`` (the manifest is written here).
    The output is deterministic: the same objects give the same bytes.  ``mimetype`` is
    ASiC-E's unless another ZIP format of the same layout (an archive file) is written.
    """
    if not _MEDIA_TYPE.fullmatch(mimetype):
        raise ValueError(f"bad media type {mimetype!r}")
    seen: set[str] = set()
    for name, media_type, _data in objects:
        _check_name(name)
        if name == _MIMETYPE_NAME or name.startswith("META-INF/"):
            raise ValueError(f"{name!r} is reserved for the container itself")
        if not _MEDIA_TYPE.fullmatch(media_type):
            raise ValueError(f"bad media type {media_type!r}")
        if name.lower() in seen:
            raise ValueError(f"{name!r} is given twice")
        seen.add(name.lower())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(_info(_MIMETYPE_NAME, zipfile.ZIP_STORED), mimetype.encode("ascii"))
        for name, _media_type, data in objects:
            zf.writestr(_info(name, zipfile.ZIP_DEFLATED), data)
        manifest = manifest_xml([(name, media_type) for name, media_type, _ in objects],
                                mimetype)
        zf.writestr(_info(MANIFEST_NAME, zipfile.ZIP_DEFLATED), manifest)
    return out.getvalue()


def _info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE_TIME)
    info.compress_type = compression
    info.create_system = 3  # Unix
    info.external_attr = 0o644 << 16
    return info


def read_container(
    data: bytes,
    *,
    media_type_of: Callable[[str], str | None],
    limits: Limits | None = None,
    mimetype: str = ASIC_E_MIMETYPE,
) -> AsicContainer:
    """Read an ASiC-E container, refusing anything irregular (see the module docstring).

    ``media_type_of`` gives the media type of each data object name the caller accepts, and
    ``None`` for any other name, which is refused: nothing unexpected rides along.  Raises
    :class:`~xchange.errors.BadRequestError` (code :data:`BAD_CONTAINER_CODE`).
    """
    limits = limits or Limits()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise _bad(f"not a ZIP file ({exc})") from exc
    with zf:
        infos = zf.infolist()
        _check_layout(infos, media_type_of, limits, mimetype)
        objects = {info.filename: _read_entry(zf, info, limits, mimetype) for info in infos}
    del objects[_MIMETYPE_NAME]
    manifest = objects.pop(MANIFEST_NAME)
    types = {name: media_type_of(name) or "" for name in objects}
    if manifest != manifest_xml(list(types.items()), mimetype):
        raise _bad("META-INF/manifest.xml does not list exactly the container's data objects")
    return AsicContainer(objects=objects, media_types=types)


def entry_names(data: bytes) -> list[str]:
    """The entry names of a ZIP file, from its central directory, nothing decompressed (to
    tell kinds of container apart before reading one in full)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise _bad(f"not a ZIP file ({exc})") from exc


def _check_layout(
    infos: Sequence[zipfile.ZipInfo],
    media_type_of: Callable[[str], str | None],
    limits: Limits,
    mimetype: str,
) -> None:
    if not infos:
        raise _bad("empty ZIP file")
    if len(infos) > limits.max_entries:
        raise _bad(f"{len(infos)} entries, more than {limits.max_entries}")
    first = infos[0]
    # 1. mimetype first, at offset 0 (nothing prepended), stored, no extra field, exact text.
    if first.filename != _MIMETYPE_NAME or first.header_offset != 0:
        raise _bad("the first entry must be mimetype, at the start of the file")
    if first.compress_type != zipfile.ZIP_STORED or first.extra:
        raise _bad("mimetype must be stored uncompressed, without extra fields")
    if first.file_size != len(mimetype):
        raise _bad(f"mimetype is not {mimetype}")
    # 2. Every entry: a safe, unique name; no encryption, no directories; sizes in bounds.
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        _check_name(name)
        if name.lower() in seen:
            raise _bad(f"entry {name!r} appears twice")
        seen.add(name.lower())
        if info.flag_bits & 0x1:
            raise _bad(f"entry {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _bad(f"entry {name!r} uses an unsupported compression method")
        if info is not first and name != MANIFEST_NAME and media_type_of(name) is None:
            raise _bad(f"unexpected entry {name!r}")
        if info.file_size > limits.max_entry_bytes:
            raise _bad(f"entry {name!r} is larger than {limits.max_entry_bytes} bytes")
        if info.file_size > _CHUNK and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise _bad(f"entry {name!r} is compressed more than {limits.max_ratio}:1")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _bad(f"more than {limits.max_total_bytes} bytes uncompressed")
    if MANIFEST_NAME not in {info.filename for info in infos}:
        raise _bad(f"{MANIFEST_NAME} is missing")


def _read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits, mimetype: str
) -> bytes:
    # Read in chunks and count: the declared size is the attacker's word, not a fact.
    parts: list[bytes] = []
    size = 0
    try:
        with zf.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > info.file_size or size > limits.max_entry_bytes:
                    raise _bad(f"entry {info.filename!r} is larger than it declares")
                parts.append(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise _bad(f"entry {info.filename!r} cannot be read ({exc})") from exc
    if size != info.file_size:
        raise _bad(f"entry {info.filename!r} is shorter than it declares")
    data = b"".join(parts)
    if info.filename == _MIMETYPE_NAME and data != mimetype.encode("ascii"):
        raise _bad(f"mimetype is not {mimetype}")
    return data
