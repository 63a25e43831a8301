"""The ``file`` backend: records of a CSV, JSON Lines or fixed-width file, looked up by key.

One file is one service with two operations: ``lookup`` (``GET {route}/{key}``: the record
whose key field equals the path parameter, 404 above when there is none) and, if the
configuration asks for it, ``list`` (``GET {route}``, ``GET /`` when no route is configured:
the records in file order, paged).

**The index.**  At start the file is read once and an index is built in a worker thread:

* ``starts`` -- the byte offset of every record (and the end of the last), so record *i* is
  exactly the bytes ``starts[i]:starts[i + 1]`` and is read with one ``pread``;
* ``packed`` -- one sorted 64-bit integer per record: the key's hash in the high bits, the
  record's number in the low bits.  A lookup bisects it for the hash, reads each record with
  that hash and keeps the one whose key really is equal (so hash collisions cost a read, never
  a wrong answer).

That is 16 bytes a record and no Python object per record: a million rows take 16 MB, not a
million dicts.  Records are parsed only when they are read.

**Changes.**  Every query compares the file's identity (device, inode, size, modification
time) with the index's.  When it changed, a new index is built in a thread and swapped in
when complete.  Meanwhile queries keep answering from the old index *if the file was
replaced* (written elsewhere and renamed over the old one: the old index reads the old file
through its own open descriptor, a consistent snapshot); if the file was *changed in place*,
the old offsets mean nothing and queries wait for the new index (at most their timeout).  A
file that cannot be indexed any more (a decoding error, a duplicate key, a missing column)
makes every query fail with that reason until the file changes again: answers are never
served from a file that is no longer there.

Encodings: any Python codec in which the line end is the single byte ``\\n`` (UTF-8,
``utf-8-sig``, ``cp1252``, ``latin-1``, ``cp775``, ...); bytes the codec cannot decode are an
error naming the line and byte, never replaced silently.

**Filters.**  Fields named in ``filters`` are indexed like the key; the listing then takes
each as an optional query parameter and answers the records equal to every one given, in
file order (found through the first one's index, the others checked on each record).

What it does not do: write to the file, follow a file that grows while it is read (the next
query sees the change and indexes again), or filter by anything but equality.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import json
import os
import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from adapters.base import ConfigValueError, Operation, Parameter, Query, Result, Value
from adapters.typed import TypedField, fields_from_config, from_json, from_text
from xchange.errors import AdapterError

__all__ = ["FileBackend", "FileConfig", "FileIndex", "build_index", "from_config"]

Format = Literal["csv", "jsonl", "fixed"]
Duplicates = Literal["error", "first", "last"]
_BLOCK: Final = 1 << 20
_HASH_BITS: Final = (1 << 64) - 1
_Raw = Any
"""A record as the format reads it: a list of cells (CSV), a dict (JSON), a str (fixed)."""


@dataclass(frozen=True, slots=True)
class FileConfig:
    """Where the file is and how to read it; built by :func:`from_config`."""

    path: Path
    format: Format
    fields: tuple[TypedField, ...]
    key: str
    """Name of the field a lookup compares (a declared field)."""
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str | None = '"'
    header: bool = True
    """CSV: the first record names the columns; otherwise ``columns`` does."""
    columns: tuple[str, ...] = ()
    skip_lines: int = 0
    """Lines before the data (and before a CSV header): titles, comments of an export."""
    listing: bool = False
    duplicates: Duplicates = "error"
    base: str = ""
    filters: tuple[str, ...] = ()
    """Fields the listing can be filtered by (``?city=Tartu``), each indexed like the key."""
    """``route``: the operations' path under the service, ``{base}/{key}`` and ``{base}``
    (``/`` when empty)."""

    @property
    def key_field(self) -> TypedField:
        return next(f for f in self.fields if f.name == self.key)


@dataclass(frozen=True, slots=True)
class _Identity:
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def same_file(self, other: _Identity) -> bool:
        return (self.device, self.inode) == (other.device, other.inode)


# -- reading records -------------------------------------------------------------------------


class _Lines:
    """The decoded lines of a binary file from its current position, each ending with its
    ``\n``, counting bytes and lines; a byte the codec cannot decode raises
    :class:`AdapterError` naming the line.

    The file is decoded a megabyte at a time, cut at a line end: in every supported codec
    the byte ``\n`` is only ever a line end, so the bytes and the text split alike.
    """

    def __init__(self, file: Any, name: str, encoding: str, *,
                 cancel: threading.Event | None = None) -> None:
        self._file, self._name, self._encoding = file, name, encoding
        self.position = self.start = self.line = 0
        """After a line was yielded: where the next one starts, where it started, its
        number (from 1)."""
        self._cancel = cancel
        self._lines = self._generate()

    def __iter__(self) -> Iterator[str]:
        # One generator however often iterated: it holds the part of the file read ahead.
        return self._lines

    def _generate(self) -> Iterator[str]:
        pending = b""
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise _Cancelled
            block = self._file.read(_BLOCK)
            data = pending + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if not data:
                return
            if cut == 0:
                pending = data
                continue
            chunk, pending = data[:cut], data[cut:]
            yield from self._lines_of(chunk)

    def _lines_of(self, chunk: bytes) -> Iterator[str]:
        try:
            text = chunk.decode(self._encoding)
        except UnicodeDecodeError as exc:
            line_start = chunk.rfind(b"\n", 0, exc.start) + 1
            number = self.line + chunk.count(b"\n", 0, exc.start) + 1
            raise AdapterError(
                f"{self._name} line {number}: byte "
                f"0x{chunk[exc.start]:02x} at byte {exc.start - line_start + 1} of the line is "
                f"not valid {self._encoding}") from exc
        raws, texts = chunk.split(b"\n"), text.split("\n")
        last = len(raws) - 1
        for i, (raw, line) in enumerate(zip(raws, texts, strict=True)):
            if i == last and not raw:
                break
            self.line += 1
            self.start = self.position
            self.position += len(raw) + (i < last)
            yield line + "\n" if i < last else line


class _Cancelled(Exception):
    """The backend closed while an index was being built."""


class _Reader:
    """One file format: how records are split, where the key is, how a record is parsed."""

    def __init__(self, config: FileConfig) -> None:
        self.config = config
        self.name = config.path.name
        self._key = config.key_field
        self.positions: dict[str, int] = {}
        """CSV: field name -> cell index, from the header or the declared columns."""

    # Each yields (record start, first line, raw record) for every non-blank record.
    def records(self, lines: _Lines) -> Iterator[tuple[int, int, _Raw]]:
        fmt = self.config.format
        if fmt == "csv":
            yield from self._csv_records(lines)
            return
        for text in lines:
            if not text.strip():
                continue
            yield lines.start, lines.line, self._parse_line(text, lines.line)

    def _csv_records(self, lines: _Lines) -> Iterator[tuple[int, int, _Raw]]:
        reader = csv.reader(lines, **self._dialect())
        start, line = lines.position, lines.line + 1
        first = True
        try:
            for row in reader:
                record_start, record_line = start, line
                start, line = lines.position, lines.line + 1
                if not row or row == [""]:
                    continue
                if first and self.config.header:
                    first = False
                    self._columns([c.lstrip("\ufeff").strip() for c in row], "header")
                    continue
                first = False
                yield record_start, record_line, row
        except csv.Error as exc:
            raise AdapterError(f"{self.name} line {lines.line}: not valid CSV: {exc}") from exc
        if first and self.config.header:
            raise AdapterError(f"{self.name}: the file is empty: no header line")

    def _dialect(self) -> dict[str, Any]:
        quoting = csv.QUOTE_MINIMAL if self.config.quotechar else csv.QUOTE_NONE
        return {"delimiter": self.config.delimiter, "quotechar": self.config.quotechar,
                "quoting": quoting, "strict": True}

    def start_csv(self) -> None:
        if self.config.format == "csv" and not self.config.header:
            self._columns(list(self.config.columns), "declared columns")

    def _columns(self, names: list[str], what: str) -> None:
        index = {name: i for i, name in reversed(list(enumerate(names)))}
        missing = [f.source for f in self.config.fields if f.source not in index]
        if missing:
            raise AdapterError(f"{self.name}: column(s) {', '.join(map(repr, missing))} are not "
                               f"in the {what} ({', '.join(map(repr, names))})")
        self.positions = {f.name: index[f.source] for f in self.config.fields}

    def _parse_line(self, text: str, line: int) -> _Raw:
        if self.config.format == "fixed":
            return text.rstrip("\r\n")
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise AdapterError(f"{self.name} line {line}: not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise AdapterError(f"{self.name} line {line}: not a JSON object")
        return value

    def parse(self, data: bytes, record: int) -> _Raw:
        """A record's bytes, read back by offset (the index knows they are one record)."""
        try:
            text = data.decode(self.config.encoding)
        except UnicodeDecodeError as exc:
            raise _Stale(f"record {record} no longer decodes") from exc
        if self.config.format == "csv":
            try:
                rows = [r for r in csv.reader(_split_lines(text), **self._dialect())
                        if r and r != [""]]
            except csv.Error as exc:
                raise _Stale(f"record {record} is no longer valid CSV") from exc
            if len(rows) != 1:
                raise _Stale(f"record {record} is no longer one record")
            return rows[0]
        try:
            return self._parse_line(text.split("\n", 1)[0], record)  # blank lines after it
        except AdapterError as exc:
            raise _Stale(exc.message) from exc

    def text_of(self, raw: _Raw, spec: TypedField) -> Any:
        fmt = self.config.format
        if fmt == "csv":
            position = self.positions[spec.name]
            return raw[position] if position < len(raw) else None
        if fmt == "fixed":
            return raw[spec.start:spec.start + spec.length]
        return raw.get(spec.source)

    def value(self, raw: _Raw, spec: TypedField) -> Value:
        text = self.text_of(raw, spec)
        if self.config.format == "jsonl":
            return from_json(text, spec)
        return from_text(text, spec)

    def key(self, raw: _Raw) -> Value:
        return self.value(raw, self._key)

    def key_reader(self) -> Callable[[_Raw], Value]:
        """:meth:`key`, made once for a scan of the whole file (a CSV's columns known):
        a CSV's string key is read without the general conversion's calls."""
        spec = self._key
        if self.config.format != "csv" or spec.field.type != "string" or \
                not spec.field.nullable:
            return self.key
        position, nulls = self.positions[spec.name], spec.null_values

        def key(row: list[str]) -> Value:
            text = row[position].strip() if position < len(row) else ""
            return None if text in nulls else text

        return key

    def record(self, raw: _Raw) -> dict[str, Value]:
        return {f.name: self.value(raw, f) for f in self.config.fields}


def _split_lines(text: str) -> list[str]:
    """Lines ending at ``\n`` only, as the index read them (``str.splitlines`` would also
    split at characters a quoted CSV cell may hold)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class _Stale(Exception):
    """Bytes read at an indexed offset are not the record indexed there any more."""


# -- the index -------------------------------------------------------------------------------


@dataclass(eq=False)
class FileIndex:
    """A read-only view of one version of the file: its records' offsets and sorted key
    hashes, and an open descriptor (so a replaced file keeps answering until swapped)."""

    fd: int
    identity: _Identity
    reader: _Reader
    starts: array[int]
    packed: array[int]
    shift: int
    filter_indexes: dict[str, array[int]] = field(default_factory=dict)
    """Per filter field, sorted like ``packed`` (the field's value hashed in place of the
    key's)."""
    users: int = 0
    retired: bool = False
    _closed: bool = field(default=False, repr=False)

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    @property
    def nbytes(self) -> int:
        """Memory the index's arrays take."""
        arrays = [self.starts, self.packed, *self.filter_indexes.values()]
        return sum(len(a) * a.itemsize for a in arrays)

    def read_raw(self, record: int) -> _Raw:
        start, end = self.starts[record], self.starts[record + 1]
        return self.reader.parse(os.pread(self.fd, end - start, start), record + 1)

    def candidates(self, key: Value, packed: array[int] | None = None) -> Iterator[int]:
        """Record numbers whose key (or the field ``packed`` indexes) hashes like ``key``,
        in file order."""
        wanted = _hash(key, self.shift)
        mask = (1 << self.shift) - 1
        packed = self.packed if packed is None else packed
        n = len(packed)
        i = bisect_left(packed, wanted << self.shift)
        while i < n and packed[i] >> self.shift == wanted:
            yield packed[i] & mask
            i += 1

    def lookup(self, key: Value, duplicates: Duplicates) -> dict[str, Value] | None:
        found: _Raw | None = None
        for record in self.candidates(key):
            raw = self.read_raw(record)
            if self.key_of(raw, record) == key:
                found = raw
                if duplicates != "last":
                    break
        return None if found is None else self._record(found, f"the record with key {key!r}")

    def page(self, offset: int, limit: int) -> tuple[list[dict[str, Value]], bool]:
        stop = min(self.count, offset + limit)
        if offset >= stop:
            return [], False
        base = self.starts[offset]
        data = os.pread(self.fd, self.starts[stop] - base, base)
        records = []
        for i in range(offset, stop):
            piece = data[self.starts[i] - base:self.starts[i + 1] - base]
            records.append(self._record(self.reader.parse(piece, i + 1), f"record {i + 1}"))
        return records, stop < self.count

    def filtered(self, filters: Mapping[str, Value], offset: int, limit: int
                 ) -> tuple[list[dict[str, Value]], bool]:
        """A page of the records whose fields equal every one of ``filters``, found through
        the first filter's index."""
        name, value = next(iter(filters.items()))
        found: list[dict[str, Value]] = []
        matched = 0
        for record in self.candidates(value, self.filter_indexes[name]):
            values = self._record(self.read_raw(record), f"record {record + 1}")
            if any(values[f] != v for f, v in filters.items()):
                continue
            if matched >= offset:
                if len(found) == limit:
                    return found, True
                found.append(values)
            matched += 1
        return found, False

    def key_of(self, raw: _Raw, record: int) -> Value:
        try:
            return self.reader.key(raw)
        except ValueError as exc:
            raise _Stale(f"record {record + 1}: {exc}") from exc

    def _record(self, raw: _Raw, where: str) -> dict[str, Value]:
        try:
            return self.reader.record(raw)
        except ValueError as exc:
            raise AdapterError(f"{self.reader.name}: {where}: {exc}") from exc

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self.close()

    def retire(self) -> None:
        self.retired = True
        if self.users == 0:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


def _hash(key: Value, shift: int) -> int:
    """The high ``64 - shift`` bits of a well-mixed 64-bit hash of ``key`` (a tuple's hash
    mixes even small integers, whose own hash is themselves)."""
    return (hash((key,)) & _HASH_BITS) >> shift


def build_index(config: FileConfig, cancel: threading.Event | None = None) -> FileIndex:
    """Read the whole file once and index it (blocking: run it in a thread)."""
    reader = _Reader(config)
    reader.start_csv()
    try:
        fd = os.open(config.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AdapterError(f"{config.path.name}: cannot be opened: {exc.strerror}") from exc
    try:
        identity = _Identity.of(os.fstat(fd))
        starts: array[int] = array("Q")
        hashes: array[int] = array("Q")
        first_lines: array[int] = array("Q")
        key_of: Callable[[_Raw], Value] | None = None
        filters = [f for f in config.fields if f.name in config.filters]
        filter_hashes: dict[str, array[int]] = {f.name: array("Q") for f in filters}
        with os.fdopen(os.dup(fd), "rb", buffering=0) as file:
            lines = _Lines(file, reader.name, config.encoding, cancel=cancel)
            for _ in zip(range(config.skip_lines), lines, strict=False):
                pass
            for start, line, raw in reader.records(lines):
                if key_of is None:
                    key_of = reader.key_reader()
                try:
                    key = key_of(raw)
                except ValueError as exc:
                    raise AdapterError(f"{reader.name} line {line}: key: {exc}") from exc
                if key is None:
                    raise AdapterError(f"{reader.name} line {line}: the key field "
                                       f"{config.key!r} has no value")
                hashes.append(hash((key,)) & _HASH_BITS)  # as _hash(key, 0)
                for spec in filters:
                    try:
                        value = reader.value(raw, spec)
                    except ValueError as exc:
                        raise AdapterError(f"{reader.name} line {line}: {exc}") from exc
                    filter_hashes[spec.name].append(hash((value,)) & _HASH_BITS)
                starts.append(start)
                first_lines.append(line)
            starts.append(lines.position)
        shift = max(1, len(hashes).bit_length())
        packed = sorted(((h >> shift) << shift) | i for i, h in enumerate(hashes))
        index = FileIndex(fd, identity, reader, starts, array("Q", packed), shift, {
            name: array("Q", sorted(((h >> shift) << shift) | i for i, h in enumerate(values)))
            for name, values in filter_hashes.items()})
        del packed, filter_hashes
        # Equal keys have equal hashes: only when some hashes are equal is there more to do.
        if config.duplicates == "error" and len(set(hashes)) < len(hashes):
            _refuse_duplicates(index, first_lines)
        return index
    except BaseException:
        os.close(fd)
        raise


def _refuse_duplicates(index: FileIndex, lines: Sequence[int]) -> None:
    """Two records with one key make a lookup ambiguous: refused, naming both lines.  Only
    records whose hashes are equal are read again."""
    packed, shift, mask = index.packed, index.shift, (1 << index.shift) - 1
    previous = -1
    for i, value in enumerate(packed):
        if value >> shift == previous:
            a, b = packed[i - 1] & mask, value & mask
            key = index.key_of(index.read_raw(a), a)
            if key == index.key_of(index.read_raw(b), b):
                raise AdapterError(f"{index.reader.name}: key {key!r} appears twice (lines "
                                   f"{lines[a]} and {lines[b]}); duplicates are refused")
        previous = value >> shift


# -- the backend -----------------------------------------------------------------------------


class FileBackend:
    """A file behind an adapter service; see the module's docstring."""

    def __init__(self, code: str, config: FileConfig) -> None:
        self.code = code
        self.config = config
        key = config.key_field.field
        self._lookup = Operation(
            service=code, name="lookup", method="GET", path=f"{config.base}/{{{key.name}}}",
            parameters=(Parameter(key.name, "path", key.type, description=key.description),),
            fields=tuple(f.field for f in config.fields), many=False,
            summary=f"The record of {config.path.name} whose {key.name} is given")
        filters = [f.field for f in config.fields if f.name in config.filters]
        self._list = Operation(
            service=code, name="list", method="GET", path=config.base or "/",
            parameters=tuple(Parameter(f.name, "query", f.type, required=False,
                                       description=f"only the records whose {f.name} is this")
                             for f in filters),
            fields=self._lookup.fields, many=True,
            summary=f"The records of {config.path.name}, in file order")
        self._index: FileIndex | None = None
        self._building: asyncio.Future[FileIndex] | None = None
        self._building_for: _Identity | None = None
        self._failure: tuple[_Identity | None, str] | None = None
        self._cancel = threading.Event()

    def operations(self) -> Sequence[Operation]:
        return (self._lookup, self._list) if self.config.listing else (self._lookup,)

    @property
    def index(self) -> FileIndex | None:
        """The index queries use now (for tests and the benchmark)."""
        return self._index

    async def start(self) -> None:
        self._index = await asyncio.to_thread(build_index, self.config, self._cancel)

    async def close(self) -> None:
        self._cancel.set()
        if self._building is not None:
            with contextlib.suppress(Exception):
                await self._building
        if self._index is not None:
            self._index.retire()
            self._index = None

    async def check(self) -> None:
        await self._current(timeout=5.0)

    async def run(self, query: Query) -> Result:
        return await self._run(query, retry=True)

    async def _run(self, query: Query, *, retry: bool) -> Result:
        index = await self._current(query.timeout)
        try:
            if query.operation.name == "lookup":
                key = query.params.get(self.config.key)
                record = index.lookup(key, self.config.duplicates)
                return Result([] if record is None else [record])
            if query.operation.name == "list" and self.config.listing:
                return await self._page(index, query)
        except _Stale as exc:
            # The file changed in place within one clock tick of its modification time, or
            # as it was read: index it again, then answer once more.
            if not retry:
                raise AdapterError(f"{self.config.path.name} changes while it is read: "
                                   f"{exc}") from exc
            await self._rebuild_now(query.timeout)
            return await self._run(query, retry=False)
        raise ValueError(f"operation {query.operation.name!r} is not one of service "
                         f"{self.code!r}")

    async def _page(self, index: FileIndex, query: Query) -> Result:
        filters = {name: value for name, value in query.params.items()
                   if name in self.config.filters and value is not None}
        # The index stays open until the worker thread is done with it, even past a timeout.
        index.acquire()
        if filters:
            work = asyncio.ensure_future(asyncio.to_thread(
                index.filtered, filters, query.offset, query.limit))
        else:
            work = asyncio.ensure_future(asyncio.to_thread(index.page, query.offset,
                                                           query.limit))
        work.add_done_callback(lambda _: index.release())
        records, more = await asyncio.wait_for(asyncio.shield(work), query.timeout)
        return Result(records, has_more=more)

    async def _rebuild_now(self, timeout: float) -> None:
        self._start_rebuild(self._stat(), force=True)
        await self._wait_for_index(timeout)

    async def _wait_for_index(self, timeout: float) -> None:
        """Wait for the index being built; its failure is recorded by :meth:`_swap` (and
        reported by the next :meth:`_current`), only the timeout is raised here."""
        if self._building is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._building), timeout)
        except TimeoutError:
            raise
        except Exception:  # noqa: S110 -- recorded in self._failure by _swap
            pass

    def _stat(self) -> _Identity:
        try:
            return _Identity.of(os.stat(self.config.path))
        except OSError as exc:
            raise AdapterError(f"{self.config.path.name}: cannot be read: {exc.strerror}"
                               ) from exc

    async def _current(self, timeout: float) -> FileIndex:
        """The index to answer from now, starting a rebuild when the file changed."""
        if self._index is None:
            raise AdapterError(f"service {self.code!r}: the file backend is not started")
        now = self._stat()
        if now != self._index.identity:
            self._start_rebuild(now)
            if self._failure is not None and self._failure[0] == now:
                raise AdapterError(f"{self.config.path.name} changed and cannot be indexed: "
                                   f"{self._failure[1]}")
            if now.same_file(self._index.identity) and self._building is not None:
                # Changed in place: the old offsets mean nothing any more.
                await self._wait_for_index(timeout)
                return await self._current(timeout)
        return self._index

    def _start_rebuild(self, seen: _Identity, *, force: bool = False) -> None:
        if self._building is not None:
            return
        if not force and self._failure is not None and self._failure[0] == seen:
            return
        loop = asyncio.get_running_loop()
        self._building_for = seen
        self._building = loop.run_in_executor(None, build_index, self.config, self._cancel)
        self._building.add_done_callback(self._swap)

    def _swap(self, done: asyncio.Future[FileIndex]) -> None:
        self._building = None
        seen, self._building_for = self._building_for, None
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            message = error.message if isinstance(error, AdapterError) else repr(error)
            self._failure = (seen, message)
            return
        new = done.result()
        if self._cancel.is_set():
            new.retire()
            return
        self._failure = None
        old, self._index = self._index, new
        if old is not None:
            old.retire()


# -- configuration ---------------------------------------------------------------------------


def from_config(code: str, section: Mapping[str, Any], base_dir: Path) -> FileBackend:
    """Build the backend of service ``code`` from its ``[services.file]`` section
    (``schemas/adapter-file.schema.json``); relative paths are relative to ``base_dir``."""
    fmt = cast(Format, section.get("format", "csv"))
    encoding = str(section.get("encoding", "utf-8"))
    try:
        codec = codecs.lookup(encoding)
    except LookupError as exc:
        raise ConfigValueError(f"unknown encoding {encoding!r}", ("encoding",)) from exc
    encoder = codec.incrementalencoder()
    encoder.encode("x")  # past a byte-order mark
    if encoder.encode("\r\n") != b"\r\n":
        raise ConfigValueError(f"{encoding!r} does not write a line end as the byte \\n "
                               "(UTF-16 and UTF-32 are not supported; convert the file to "
                               "UTF-8)", ("encoding",))
    csv_options: Mapping[str, Any] = section.get("csv", {})
    fields = fields_from_config(section["fields"],
                                source_key="element" if fmt == "jsonl" else "column",
                                null_values=section.get("null_values", [""]),
                                decimal_comma=bool(section.get("decimal_comma", False)))
    names = {f.name for f in fields}
    key = str(section["key"])
    if key not in names:
        raise ConfigValueError(f"{key!r} is not a declared field "
                               f"({', '.join(sorted(names))})", ("key",))
    if fmt == "fixed":
        for i, f in enumerate(fields):
            if f.length <= 0:
                raise ConfigValueError(f"field {f.name!r} needs start and length (fixed width)",
                                       ("fields", i))
    filters = tuple(str(f) for f in section.get("filters", ()))
    for i, name in enumerate(filters):
        if name not in names:
            raise ConfigValueError(f"{name!r} is not a declared field", ("filters", i))
    if filters and not section.get("list", False):
        raise ConfigValueError("filters filter the listing: set list = true", ("filters",))
    header = bool(csv_options.get("header", True))
    columns = tuple(str(c) for c in csv_options.get("columns", ()))
    if fmt == "csv" and not header and not columns:
        raise ConfigValueError("a CSV without a header line needs its columns declared",
                               ("csv", "columns"))
    path = Path(str(section["path"]))
    config = FileConfig(
        path=path if path.is_absolute() else base_dir / path,
        format=fmt, fields=fields, key=key, encoding=codec.name,
        delimiter=str(csv_options.get("delimiter", ",")),
        quotechar=csv_options.get("quote", '"') or None,
        header=header, columns=columns, skip_lines=int(section.get("skip_lines", 0)),
        listing=bool(section.get("list", False)),
        base=str(section.get("route", "")).rstrip("/"), filters=filters,
        duplicates=cast(Duplicates, section.get("duplicates", "error")))
    return FileBackend(code, config)

