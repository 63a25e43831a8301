"""The file backend on real files: formats, encodings, typing, the index, changes, errors."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from adapters.base import ConfigValueError, Query, Result
from adapters.files import FileBackend, from_config
from schemas import load_json_schema
from xchange.errors import AdapterError

PERSONS_FIELDS = [
    {"name": "code", "column": "ISIKUKOOD"},
    {"name": "name", "column": "NIMI"},
    {"name": "born", "type": "date", "format": "%d.%m.%Y", "column": "SYNNIAEG"},
    {"name": "children", "type": "integer", "column": "LAPSI"},
    {"name": "income", "type": "number", "column": "SISSETULEK"},
    {"name": "alive", "type": "boolean", "true": ["J"], "false": ["N"], "column": "ELUS"},
]
PERSONS_CSV = (
    "ISIKUKOOD;NIMI;SYNNIAEG;LAPSI;SISSETULEK;ELUS\r\n"
    "38001010001;Žaneta Šimková;01.01.1980;2;1234,50;J\r\n"
    '49002020002;"Ölo; ""the"" Öunapuu";02.02.1990;;;N\r\n'
    "\r\n"
    "37003030003;Õie Ämarik;03.03.1970;0;-5;J\r\n"
)


def section(path: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "key": "code", "encoding": "cp1252",
            "csv": {"delimiter": ";"}, "decimal_comma": True, "fields": PERSONS_FIELDS,
            **extra}


@pytest.fixture
async def running() -> AsyncIterator[list[FileBackend]]:
    """Backends a test starts; closed after it."""
    started: list[FileBackend] = []
    yield started
    for backend in started:
        await backend.close()


async def start(code: str, sec: Mapping[str, Any], base: Path,
                started: list[FileBackend]) -> FileBackend:
    backend = from_config(code, sec, base)
    await backend.start()
    started.append(backend)
    return backend


async def lookup(backend: FileBackend, key: Any, timeout: float = 10.0) -> Result:
    return await backend.run(Query(backend.operations()[0], {backend.config.key: key},
                                   timeout=timeout))


async def page(backend: FileBackend, offset: int, limit: int) -> Result:
    return await backend.run(Query(backend.operations()[1], {}, offset=offset, limit=limit))


async def test_csv_with_header_in_cp1252_typed(tmp_path: Path, running: list[FileBackend]
                                               ) -> None:
    (tmp_path / "persons.csv").write_bytes(PERSONS_CSV.encode("cp1252"))
    backend = await start("persons", section(Path("persons.csv"), list=True), tmp_path,
                          running)

    result = await lookup(backend, "38001010001")
    assert result.records == [{"code": "38001010001", "name": "Žaneta Šimková",
                               "born": "1980-01-01", "children": 2, "income": 1234.5,
                               "alive": True}]
    assert (await lookup(backend, "49002020002")).records == [
        {"code": "49002020002", "name": 'Ölo; "the" Öunapuu', "born": "1990-02-02",
         "children": None, "income": None, "alive": False}]
    assert (await lookup(backend, "38001010002")).records == []

    first = await page(backend, 0, 2)
    assert [r["code"] for r in first.records] == ["38001010001", "49002020002"]
    assert first.has_more
    last = await page(backend, 2, 2)
    assert [r["income"] for r in last.records] == [-5.0]
    assert not last.has_more
    assert (await page(backend, 3, 2)).records == []
    await backend.check()


def test_operations_follow_the_key_field(tmp_path: Path) -> None:
    fields = [{"name": "id", "type": "integer", "description": "the id"}, {"name": "v"}]
    only = from_config("things", {"path": "x.csv", "key": "id", "fields": fields}, tmp_path)
    (op,) = only.operations()
    assert (op.service, op.name, op.method, op.path, op.many) == (
        "things", "lookup", "GET", "/{id}", False)
    assert [(p.name, p.location, p.type, p.description) for p in op.parameters] == [
        ("id", "path", "integer", "the id")]
    assert [(f.name, f.type) for f in op.fields] == [("id", "integer"), ("v", "string")]
    both = from_config("things", {"path": "x.csv", "key": "id", "fields": fields, "list": True},
                       tmp_path)
    listing = both.operations()[1]
    assert (listing.name, listing.path, listing.many, listing.parameters) == (
        "list", "/", True, ())
    assert only.config.path == tmp_path / "x.csv"
    under = from_config("things", {"path": "x.csv", "key": "id", "fields": fields, "list": True,
                                   "route": "/things/"}, tmp_path)
    assert [op.path for op in under.operations()] == ["/things/{id}", "/things"]


async def test_integer_keys_compare_as_integers(tmp_path: Path,
                                                running: list[FileBackend]) -> None:
    (tmp_path / "n.csv").write_text("id,v\n007,seven\n8,eight\n", encoding="utf-8")
    backend = await start("n", {"path": "n.csv", "key": "id", "fields": [
        {"name": "id", "type": "integer"}, {"name": "v"}]}, tmp_path, running)
    assert (await lookup(backend, 7)).records == [{"id": 7, "v": "seven"}]
    assert (await lookup(backend, 8)).records == [{"id": 8, "v": "eight"}]
    assert (await lookup(backend, 9)).records == []


async def test_csv_without_header_quotes_and_multiline_cells(
        tmp_path: Path, running: list[FileBackend]) -> None:
    text = "'a','line one\nline two'\n'b','it''s'\n'c',plain\n"
    (tmp_path / "q.csv").write_text(text, encoding="utf-8")
    backend = await start("q", {
        "path": "q.csv", "key": "k", "list": True,
        "csv": {"header": False, "columns": ["k", "v"], "quote": "'"},
        "fields": [{"name": "k"}, {"name": "v"}]}, tmp_path, running)
    assert (await lookup(backend, "a")).records == [{"k": "a", "v": "line one\nline two"}]
    assert (await lookup(backend, "b")).records == [{"k": "b", "v": "it's"}]
    assert [r["k"] for r in (await page(backend, 0, 10)).records] == ["a", "b", "c"]


async def test_csv_without_quoting(tmp_path: Path, running: list[FileBackend]) -> None:
    (tmp_path / "n.csv").write_text('k|v\na|say "hi"\n', encoding="utf-8")
    backend = await start("n", {"path": "n.csv", "key": "k",
                                "csv": {"delimiter": "|", "quote": ""},
                                "fields": [{"name": "k"}, {"name": "v"}]}, tmp_path, running)
    assert (await lookup(backend, "a")).records == [{"k": "a", "v": 'say "hi"'}]


async def test_a_listing_filtered_by_indexed_fields(tmp_path: Path,
                                                    running: list[FileBackend]) -> None:
    rows = [f"{i},{'Tartu' if i % 3 == 0 else 'Narva'},{i % 2}" for i in range(1, 31)]
    (tmp_path / "c.csv").write_text("id,city,kids\n" + "\n".join(rows) + "\n",
                                    encoding="utf-8")
    backend = await start("c", {"path": "c.csv", "key": "id", "list": True,
                                "filters": ["city", "kids"],
                                "fields": [{"name": "id", "type": "integer"}, {"name": "city"},
                                           {"name": "kids", "type": "integer"}]},
                          tmp_path, running)
    listing = backend.operations()[1]
    assert [(p.name, p.location, p.type, p.required) for p in listing.parameters] == [
        ("city", "query", "string", False), ("kids", "query", "integer", False)]

    async def ids(params: dict[str, Any], offset: int = 0, limit: int = 100
                  ) -> tuple[list[Any], bool]:
        result = await backend.run(Query(listing, params, offset=offset, limit=limit))
        return [r["id"] for r in result.records], result.has_more

    assert await ids({"city": "Tartu"}) == ([3, 6, 9, 12, 15, 18, 21, 24, 27, 30], False)
    assert await ids({"city": "Tartu"}, offset=2, limit=3) == ([9, 12, 15], True)
    assert await ids({"city": "Tartu"}, offset=8, limit=2) == ([27, 30], False)
    assert await ids({"city": "Tartu", "kids": 1}) == ([3, 9, 15, 21, 27], False)
    assert await ids({"kids": 0, "city": "Tartu"}, limit=2) == ([6, 12], True)
    assert await ids({"city": "Tallinn"}) == ([], False)
    assert await ids({"city": None}, limit=2) == ([1, 2], True), "no value: no filter"
    assert backend.index is not None and backend.index.nbytes == 31 * 8 + 3 * 30 * 8


@pytest.mark.parametrize(("encoding", "name"), [
    ("cp1252", "Žaneta Šimková"),
    ("latin-1", "Jürgen Ålund"),
    ("cp775", "Šarūnas Bērziņš"),
    ("utf-8", "Mäe Õun 😀"),
    ("utf-8-sig", "Ülle Ärni"),
])
async def test_legacy_encodings(tmp_path: Path, running: list[FileBackend], encoding: str,
                                name: str) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(f"code,name\n1,{name}\n2,x\n".encode(encoding))
    if encoding == "utf-8-sig":
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    backend = await start("e", {"path": str(path), "key": "code", "encoding": encoding,
                                "fields": [{"name": "code"}, {"name": "name"}]},
                          tmp_path, running)
    assert (await lookup(backend, "1")).records == [{"code": "1", "name": name}]


@pytest.mark.parametrize(("encoding", "data", "message"), [
    ("cp1252", b"code,name\n1,ok\n2,bad \x81 byte\n",
     r"e\.csv line 3: byte 0x81 at byte 7 of the line is not valid cp1252"),
    ("utf-8", b"code,name\n1,J\xfcrgen\n",
     r"e\.csv line 2: byte 0xfc at byte 4 of the line is not valid utf-8"),
])
async def test_bytes_the_encoding_cannot_decode_are_an_error(
        tmp_path: Path, encoding: str, data: bytes, message: str) -> None:
    (tmp_path / "e.csv").write_bytes(data)
    backend = from_config("e", {"path": "e.csv", "key": "code", "encoding": encoding,
                                "fields": [{"name": "code"}, {"name": "name"}]}, tmp_path)
    with pytest.raises(AdapterError, match=message) as caught:
        await backend.start()
    assert caught.value.code == "adapter.backend_failed"


async def test_json_lines(tmp_path: Path, running: list[FileBackend]) -> None:
    lines = [
        {"id": 1, "name": "Mari", "score": 4, "ok": True, "when": "2024-05-01T10:00:00",
         "extra": [1, 2]},
        {"id": "2", "name": None, "score": "2.5", "ok": "false", "when": None},
    ]
    (tmp_path / "p.jsonl").write_text(
        "\n".join(json.dumps(r) for r in lines) + "\n\n", encoding="utf-8")
    backend = await start("p", {"path": "p.jsonl", "format": "jsonl", "key": "id", "list": True,
                                "fields": [{"name": "id", "type": "integer"}, {"name": "name"},
                                           {"name": "score", "type": "number"},
                                           {"name": "ok", "type": "boolean"},
                                           {"name": "at", "type": "datetime",
                                            "element": "when"}]}, tmp_path, running)
    assert (await lookup(backend, 1)).records == [
        {"id": 1, "name": "Mari", "score": 4.0, "ok": True, "at": "2024-05-01T10:00:00"}]
    assert (await lookup(backend, 2)).records == [
        {"id": 2, "name": None, "score": 2.5, "ok": False, "at": None}]
    assert len((await page(backend, 0, 10)).records) == 2


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": 1', r"p\.jsonl line 2: not valid JSON"),
    ('[1, 2]', r"p\.jsonl line 2: not a JSON object"),
    ('{"id": true}', r"p\.jsonl line 2: key: field 'id': the JSON value 'True' is not an "
                     r"integer"),
    ('{"name": "no id"}', r"p\.jsonl line 2: the key field 'id' has no value"),
])
async def test_json_lines_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "p.jsonl").write_text('{"id": 0}\n' + line + "\n", encoding="utf-8")
    backend = from_config("p", {"path": "p.jsonl", "format": "jsonl", "key": "id",
                                "fields": [{"name": "id", "type": "integer"}]}, tmp_path)
    with pytest.raises(AdapterError, match=message):
        await backend.start()


async def test_fixed_width_records(tmp_path: Path, running: list[FileBackend]) -> None:
    records = [
        "TITLE LINE OF THE EXPORT",
        "38001010001Mari Maasikas       19800101J0000123",
        "   ",
        "49002020002Jüri Õunapuu        19900202N",
    ]
    (tmp_path / "f.dat").write_bytes("\r\n".join(records).encode("cp775") + b"\r\n")
    backend = await start("f", {
        "path": "f.dat", "format": "fixed", "encoding": "cp775", "key": "code", "skip_lines": 1,
        "list": True, "fields": [
            {"name": "code", "start": 1, "length": 11},
            {"name": "name", "start": 12, "length": 20},
            {"name": "born", "type": "date", "format": "%Y%m%d", "start": 32, "length": 8},
            {"name": "alive", "type": "boolean", "true": ["J"], "false": ["N"], "start": 40,
             "length": 1},
            {"name": "balance", "type": "integer", "start": 41, "length": 7}]},
        tmp_path, running)
    assert (await lookup(backend, "49002020002")).records == [
        {"code": "49002020002", "name": "Jüri Õunapuu", "born": "1990-02-02", "alive": False,
         "balance": None}]
    assert [r["balance"] for r in (await page(backend, 0, 5)).records] == [123, None]
    assert (await lookup(backend, "TITLE LINE ")).records == []


@pytest.mark.parametrize(("extra", "message", "where"), [
    ({"key": "nope"}, r"'nope' is not a declared field \(alive, born, ", ("key",)),
    ({"encoding": "klingon"}, r"unknown encoding 'klingon'", ("encoding",)),
    ({"encoding": "utf-16"}, r"'utf-16' does not write a line end as the byte \\n",
     ("encoding",)),
    ({"fields": [{"name": "a"}, {"name": "a"}], "key": "a"}, r"field 'a' is declared twice",
     ("fields", 1, "name")),
    ({"csv": {"header": False}}, r"a CSV without a header line needs its columns declared",
     ("csv", "columns")),
    ({"format": "fixed"}, r"field 'code' needs start and length", ("fields", 0)),
    ({"list": True, "filters": ["name", "town"]}, r"'town' is not a declared field",
     ("filters", 1)),
    ({"filters": ["name"]}, r"filters filter the listing: set list = true", ("filters",)),
])
def test_configuration_errors_name_the_field(tmp_path: Path, extra: dict[str, Any],
                                             message: str, where: tuple[str | int, ...]) -> None:
    sec = section(tmp_path / "p.csv", **extra)
    jsonschema.validate(sec, load_json_schema("adapter-file.schema.json"))
    with pytest.raises(ConfigValueError, match=message) as caught:
        from_config("persons", sec, tmp_path)
    assert caught.value.path == where


@pytest.mark.parametrize(("extra", "where"), [
    ({"format": "xml"}, ["format"]),
    ({"colour": "blue"}, []),
    ({"fields": [{"name": "a", "type": "money"}]}, ["fields", 0, "type"]),
    ({"fields": [{"name": "a b"}]}, ["fields", 0, "name"]),
    ({"fields": []}, ["fields"]),
    ({"csv": {"delimiter": ";;"}}, ["csv", "delimiter"]),
    ({"fields": [{"name": "a", "start": 0, "length": 1}]}, ["fields", 0, "start"]),
    ({"duplicates": "keep"}, ["duplicates"]),
    ({"route": "things"}, ["route"]),
    ({"route": "/a b"}, ["route"]),
])
def test_the_schema_refuses_malformed_sections(tmp_path: Path, extra: dict[str, Any],
                                               where: list[str | int]) -> None:
    validator = jsonschema.Draft202012Validator(load_json_schema("adapter-file.schema.json"))
    errors = list(validator.iter_errors(section(tmp_path / "p.csv", **extra)))
    assert errors
    assert [list(e.absolute_path) for e in errors] == [where]


@pytest.mark.parametrize(("content", "message"), [
    ("", r"the file is empty: no header line"),
    ("ISIKUKOOD;NAME\n", r"column\(s\) 'NIMI', 'SYNNIAEG', 'LAPSI', 'SISSETULEK', 'ELUS' are "
                         r"not in the header \('ISIKUKOOD', 'NAME'\)"),
    ("ISIKUKOOD;NIMI;SYNNIAEG;LAPSI;SISSETULEK;ELUS\n;x;;;;\n",
     r"line 2: the key field 'code' has no value"),
    ('ISIKUKOOD;NIMI;SYNNIAEG;LAPSI;SISSETULEK;ELUS\n1;"open\n',
     r"line 2: not valid CSV: unexpected end of data"),
])
async def test_files_that_cannot_be_indexed(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "p.csv").write_text(content, encoding="cp1252")
    backend = from_config("persons", section(tmp_path / "p.csv"), tmp_path)
    with pytest.raises(AdapterError, match=message):
        await backend.start()


async def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    backend = from_config("persons", section(tmp_path / "absent.csv"), tmp_path)
    with pytest.raises(AdapterError, match=r"absent\.csv: cannot be opened: No such file"):
        await backend.start()


async def test_a_value_of_the_wrong_type_fails_that_record_only(
        tmp_path: Path, running: list[FileBackend]) -> None:
    text = PERSONS_CSV.replace("03.03.1970", "31.02.1970")
    (tmp_path / "p.csv").write_bytes(text.encode("cp1252"))
    backend = await start("persons", section(tmp_path / "p.csv"), tmp_path, running)
    assert (await lookup(backend, "38001010001")).records
    with pytest.raises(AdapterError, match=r"p\.csv: the record with key '37003030003': field "
                                           r"'born': '31\.02\.1970' is not a date in the "
                                           r"format %d\.%m\.%Y") as caught:
        await lookup(backend, "37003030003")
    assert caught.value.status == 502


@pytest.mark.parametrize(("duplicates", "expected"), [("first", "one"), ("last", "three")])
async def test_duplicate_keys_first_or_last(tmp_path: Path, running: list[FileBackend],
                                            duplicates: str, expected: str) -> None:
    (tmp_path / "d.csv").write_text("k,v\na,one\nb,two\na,three\n", encoding="utf-8")
    backend = await start("d", {"path": "d.csv", "key": "k", "duplicates": duplicates,
                                "fields": [{"name": "k"}, {"name": "v"}]}, tmp_path, running)
    assert (await lookup(backend, "a")).records == [{"k": "a", "v": expected}]


async def test_duplicate_keys_are_refused_by_default(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("k,v\na,one\nb,two\na,three\n", encoding="utf-8")
    backend = from_config("d", {"path": "d.csv", "key": "k",
                                "fields": [{"name": "k"}, {"name": "v"}]}, tmp_path)
    with pytest.raises(AdapterError, match=r"key 'a' appears twice \(lines 2 and 4\)"):
        await backend.start()


# -- changes to the file ----------------------------------------------------------------------


async def wait_for_answer(backend: FileBackend, key: Any, field: str, wanted: Any,
                          deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        records = (await lookup(backend, key, timeout=deadline_s)).records
        if records and records[0][field] == wanted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key}: {field} never became {wanted!r}")


async def test_editing_the_file_in_place_changes_the_answer(
        tmp_path: Path, running: list[FileBackend]) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(PERSONS_CSV.encode("cp1252"))
    backend = await start("persons", section(path), tmp_path, running)
    assert (await lookup(backend, "38001010001")).records[0]["name"] == "Žaneta Šimková"
    with path.open("r+b") as f:  # same inode: the old offsets mean nothing now
        f.write(PERSONS_CSV.replace("Žaneta Šimková", "Z").encode("cp1252"))
        f.truncate()
    # An in-place change is indexed before the next answer: no wait needed.
    assert (await lookup(backend, "38001010001")).records[0]["name"] == "Z"
    assert (await lookup(backend, "37003030003")).records[0]["name"] == "Õie Ämarik"


async def test_a_file_broken_by_an_edit_fails_queries_until_repaired(
        tmp_path: Path, running: list[FileBackend]) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(PERSONS_CSV.encode("cp1252"))
    backend = await start("persons", section(path), tmp_path, running)
    path.write_bytes(PERSONS_CSV.encode("cp1252") + b"39912310009;\x81;;;;\r\n")
    for _ in range(2):  # the failure is remembered: the file is not indexed again
        with pytest.raises(AdapterError, match=r"p\.csv changed and cannot be indexed: p\.csv "
                                               r"line 6: byte 0x81 .* not valid cp1252"):
            await lookup(backend, "38001010001")
    with pytest.raises(AdapterError, match="cannot be indexed"):
        await backend.check()
    path.write_bytes(PERSONS_CSV.replace("Õie", "Oie").encode("cp1252"))
    await wait_for_answer(backend, "37003030003", "name", "Oie Ämarik")
    await backend.check()
    path.unlink()
    with pytest.raises(AdapterError, match=r"p\.csv: cannot be read: No such file"):
        await lookup(backend, "38001010001")


# -- a million rows -----------------------------------------------------------------------------

MILLION = 1_000_000


def million_line(i: int, name: str = "Nimi") -> str:
    return f"{i:011d};{name} {i};{1 + i % 28:02d}.{1 + i % 12:02d}.19{i % 100:02d};{i % 7}\r\n"


@pytest.fixture(scope="module")
def million_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("million") / "million.csv"
    with path.open("w", encoding="cp1252", newline="") as f:
        f.write("code;name;born;children\r\n")
        for start in range(0, MILLION, 10_000):
            f.write("".join(million_line(i, "Šimon") for i in range(start, start + 10_000)))
    return path


def first_rows(million_csv: Path, path: Path, rows: int) -> Path:
    with million_csv.open("rb") as src, path.open("wb") as dst:
        dst.writelines(line for _, line in zip(range(rows + 1), src, strict=False))
    return path


def million_section(path: Path) -> dict[str, Any]:
    return {"path": str(path), "key": "code", "encoding": "cp1252", "list": True,
            "csv": {"delimiter": ";"},
            "fields": [{"name": "code"}, {"name": "name"},
                       {"name": "born", "type": "date", "format": "%d.%m.%Y"},
                       {"name": "children", "type": "integer"}]}


async def test_a_million_rows_lookups_are_right_fast_and_compact(
        million_csv: Path, running: list[FileBackend]) -> None:
    backend = await start("m", million_section(million_csv), million_csv.parent, running)
    index = backend.index
    assert index is not None and index.count == MILLION
    assert index.nbytes <= 17 * MILLION, "16 bytes a record: no Python object per record"

    took = []
    for i in [0, 1, 2, 499_999, MILLION - 1, *range(3, MILLION, 9973)]:
        started = time.perf_counter()
        result = await lookup(backend, f"{i:011d}")
        took.append(time.perf_counter() - started)
        assert result.records == [{"code": f"{i:011d}", "name": f"Šimon {i}",
                                   "born": f"19{i % 100:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                                   "children": i % 7}]
    for missing in ["", "1000000", f"{MILLION:011d}", "0000000000", "x" * 100]:
        assert (await lookup(backend, missing)).records == []
    assert statistics.median(took) < 0.001, f"median lookup {statistics.median(took) * 1e6} us"

    tail = await page(backend, MILLION - 2, 10)
    assert [r["code"] for r in tail.records] == [f"{MILLION - 2:011d}", f"{MILLION - 1:011d}"]
    assert not tail.has_more


async def test_a_replaced_million_row_file_answers_from_the_old_index_while_indexing(
        million_csv: Path, tmp_path: Path, running: list[FileBackend]) -> None:
    path = tmp_path / "million.csv"
    os.link(million_csv, path)  # replaced below by a rename: the fixture's file is kept
    backend = await start("m", million_section(path), tmp_path, running)
    old_index = backend.index
    key = f"{777_777:011d}"

    fresh = tmp_path / "fresh.csv"
    with million_csv.open("rb") as src, fresh.open("wb") as dst:
        for line in src:
            dst.write(line.replace(b";\x8aimon 777777;", b";Uus 777777;"))
    os.replace(fresh, path)

    started = time.perf_counter()
    during = await lookup(backend, key)
    assert time.perf_counter() - started < 0.5, "the old index answers without waiting"
    assert during.records[0]["name"] == "Šimon 777777"
    assert backend.index is old_index, "the new index is not complete yet"
    await wait_for_answer(backend, key, "name", "Uus 777777")
    assert backend.index is not old_index
    assert old_index is not None and old_index.retired


async def test_waiting_for_an_index_is_bounded_by_the_timeout(
        million_csv: Path, tmp_path: Path, running: list[FileBackend]) -> None:
    path = first_rows(million_csv, tmp_path / "part.csv", 200_000)
    backend = await start("m", million_section(path), tmp_path, running)
    with path.open("ab") as f:  # appended in place: queries wait for the new index
        f.write(million_line(MILLION).encode("cp1252"))
    with pytest.raises(TimeoutError):
        await lookup(backend, f"{MILLION:011d}", timeout=0.005)
    await wait_for_answer(backend, f"{MILLION:011d}", "children", MILLION % 7)
    assert (await lookup(backend, f"{199_999:011d}")).records


async def test_closing_stops_an_index_being_built(million_csv: Path, tmp_path: Path) -> None:
    path = first_rows(million_csv, tmp_path / "part.csv", 200_000)
    backend = from_config("m", million_section(path), tmp_path)
    await backend.start()
    index = backend.index
    assert index is not None
    os.utime(path, ns=(0, 0))  # looks changed: a new index starts building
    await lookup(backend, "00000000001")
    started = time.perf_counter()
    await backend.close()
    assert time.perf_counter() - started < 2.0, "the build stops at its next megabyte"
    assert index.retired
    with pytest.raises(OSError):
        os.fstat(index.fd)
    with pytest.raises(AdapterError, match="not started"):
        await lookup(backend, "00000000001")
