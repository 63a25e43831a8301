"""Adapter configuration: what is accepted, and refusals that name the file, line and field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.config import AdapterConfigError, load_config, parse_config
from adapters.sourcemap import toml_lines
from adapters.sql import SqlBackend
from tests.adapters.sqlkit import adapter_toml, database
from xchange_cli.federation import free_port

GOOD = adapter_toml("sqlite:///register.db", "sqlite")


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _line_of(text: str, needle: str, after: str = "") -> int:
    """1-based number of the first line containing ``needle`` (after a line with ``after``)."""
    start = 0
    if after:
        start = next(i for i, line in enumerate(_lines(text)) if after in line)
    return next(i for i, line in enumerate(_lines(text)) if i >= start and needle in line) + 1


def refusal(text: str, fmt: str = "toml") -> AdapterConfigError:
    source = Path(f"/etc/xchange/adapter.{fmt}")
    with pytest.raises(AdapterConfigError) as info:
        parse_config(text, source, fmt)  # type: ignore[arg-type]
    return info.value


def test_the_example_is_valid(tmp_path: Path) -> None:
    config = parse_config(GOOD, tmp_path / "a.toml", "toml")
    (service,) = config.services
    assert (service.code, service.kind, service.row_limit, service.default_limit,
            service.timeout, service.data_subject_field) == ("register", "sql", 10, 4, 1.0,
                                                             "code")
    assert [op.name for op in service.backend.operations()] == [
        "person", "person_by_id", "by_city", "by_income", "slow"]
    assert service.granted("DEMO/GOV/70000002/analytics") == frozenset({"code", "born", "city"})
    assert service.granted("DEMO/GOV/70000009/other") is None


@pytest.mark.parametrize(("change", "needle", "field", "says"), [
    (('parameters = [{ name = "id", type = "integer" }]',
      'parameters = [{ name = "id", type = "int" }]'), 'type = "int"',
     "services[0].sql.queries[1].parameters[0].type", "'int' is not one of"),
    (("row_limit = 10", "row_limt = 10"), "row_limt", "services[0].row_limt",
     "unknown key 'row_limt'"),
    (("timeout_seconds = 1.0", 'timeout_seconds = "soon"'), "timeout_seconds",
     "services[0].timeout_seconds", "'soon' is not of type 'number'"),
    (('kind = "sql"', 'kind = "ldap"'), 'kind = "ldap"', "services[0].kind",
     "unknown kind 'ldap'"),
    (('path = "/persons-by-id/{id}"', 'path = "persons-by-id/{id}"'), "persons-by-id",
     "services[0].sql.queries[1].path", "does not match"),
    (("WHERE id = :id", "WHERE id = :ident"), "WHERE id = :ident",
     "services[0].sql.queries[1].sql", "placeholders (:ident) must be exactly the declared "
     "parameters (id)"),
    (('path = "/persons-by-id/{id}"', 'path = "/persons-by-id/{pid}"'), "{pid}",
     "services[0].sql.queries[1].path", "path parameter {pid} is not declared"),
    (('"DEMO/GOV/70000002/analytics" = ["code", "born", "city"]',
      '"DEMO/GOV/70000002/analytics" = ["born", "city"]'), '/analytics" =',
     "services[0].consumers.DEMO/GOV/70000002/analytics",
     "must include the data_subject_field 'code'"),
    (('url = "sqlite:///register.db"', 'url = "oracle://x/y"'), "oracle://",
     "services[0].sql.url", "database 'oracle' is not supported"),
    (("default_limit = 4", "default_limit = 40"), "default_limit",
     "services[0].default_limit", "must not be larger than row_limit"),
])
def test_a_wrong_value_is_refused_naming_line_and_field(
        change: tuple[str, str], needle: str, field: str, says: str) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    err = refusal(text)
    line = _line_of(text, needle)
    assert str(err).startswith(f"/etc/xchange/adapter.toml:{line}: {field}: "), str(err)
    assert says in str(err)


def test_multi_line_arrays_and_strings_keep_lines_right() -> None:
    text = GOOD.replace('fields = [{ name = "id", type = "integer" }, ',
                        'fields = [\n  { name = "id", type = "integer" },\n  ', 1)
    text = text.replace('{ name = "born", type = "date" }', '{ name = "born", type = "day" }', 1)
    err = refusal(text)
    day = _line_of(text, 'type = "day"')
    assert f"adapter.toml:{day}: services[0].sql.queries[0].fields[3].type:" in str(err)
    lines = toml_lines(text)
    assert lines[("services", 0, "sql", "queries", 0, "fields", 0)] == \
        _line_of(text, '{ name = "id", type = "integer" },')
    assert lines[("services", 0, "sql", "queries", 1, "name")] == \
        _line_of(text, 'name = "person_by_id"')


def test_missing_keys_and_tables_are_named() -> None:
    err = refusal(GOOD.replace('code = "register"\n', "", 1))
    assert ": services[0]: missing key(s): code" in str(err)
    assert str(err).startswith(f"/etc/xchange/adapter.toml:{_line_of(GOOD, '[[services]]')}:")
    err = refusal('[[services]]\ncode = "x"\nkind = "sql"\n[services.consumers]\n"*" = ["*"]\n')
    assert str(err) == ("/etc/xchange/adapter.toml:1: services[0]: kind 'sql' needs its "
                        "table [services.sql]")
    err = refusal("[adapter]\nport = 8080\n")
    assert str(err) == "/etc/xchange/adapter.toml: (top level): missing key(s): services"


def test_toml_syntax_error_names_the_line() -> None:
    err = refusal(GOOD.replace("row_limit = 10", "row_limit = = 10"))
    assert re.search(r"\(syntax\): .*line \d+", str(err))


def test_yaml_errors_name_the_line() -> None:
    text = """services:
  - code: register
    kind: sql
    consumers:
      "*": ["*"]
    sql:
      url: sqlite:///register.db
      queries:
        - name: person
          path: /persons/{code}
          sql: SELECT code FROM persons WHERE code = :code
          parameters:
            - {name: code, type: text}
          fields: [{name: code, type: string}]
"""
    err = refusal(text, "yaml")
    assert str(err).startswith("/etc/xchange/adapter.yaml:13: "
                               "services[0].sql.queries[0].parameters[0].type: 'text'")
    config = parse_config(text.replace("type: text", "type: string"),
                          Path("/etc/xchange/adapter.yaml"), "yaml")
    assert config.services[0].backend.operations()[0].path == "/persons/{code}"
    err = refusal("services:\n  - code: [\n", "yaml")
    assert "(syntax)" in str(err)


def test_yaml_aliases_are_refused() -> None:
    err = refusal("a: &x [1]\nservices: *x\n", "yaml")
    assert "aliases are not accepted" in str(err)


def test_sqlite_without_fields_is_refused_and_files_are_relative(tmp_path: Path) -> None:
    text = GOOD.replace('fields = [{ name = "id", type = "integer" }, { name = "code", '
                        'type = "string" }, { name = "name", type = "string" }, { name = '
                        '"born", type = "date" }, { name = "city", type = "string" }, { name '
                        '= "income", type = "number" }]\n', "", 1)
    err = refusal(text)
    assert "services[0].sql.queries[0]: SQLite reports no column types" in str(err)
    path = tmp_path / "conf" / "adapter.toml"
    path.parent.mkdir()
    path.write_text(GOOD)
    backend = load_config(path).services[0].backend
    assert isinstance(backend, SqlBackend)
    assert str(backend.url.database) == str(path.parent / "register.db")


def test_a_password_file_open_to_others_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "db.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    text = GOOD.replace('url = "sqlite:///register.db"',
                        'url = "postgresql://reader@db/register"\npassword_file = "db.password"')
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    with pytest.raises(AdapterConfigError, match=r"adapter.toml:\d+: services\[0\].sql."
                                                 r"password_file: .*"):
        load_config(path)
    secret.chmod(0o600)
    backend = load_config(path).services[0].backend
    assert isinstance(backend, SqlBackend)
    assert backend.url.password == "s3cret"


def _xchange(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xchange_cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_check_and_a_serve_that_does_not_start(tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as url:
        port = free_port()
        path = tmp_path / "adapter.toml"
        path.write_text(adapter_toml(url, "sqlite", port=port))
        ok = _xchange("adapter", "check", str(path), cwd=tmp_path)
        assert (ok.returncode, ok.stdout.strip()) == (
            0, f"{path}: valid: 1 service(s), 5 operation(s)")
        bad = path.read_text().replace('type = "number"', 'type = "float"', 1)
        path.write_text(bad)
        for command in ("check", "serve"):
            run = _xchange("adapter", command, str(path), cwd=tmp_path)
            assert run.returncode == 1
            line = _line_of(bad, 'type = "float"')
            assert f"xchange: error: {path}:{line}: services[0].sql.queries[0].fields[5]." \
                   "type: 'float' is not one of" in run.stderr
            assert "Traceback" not in run.stderr
            assert "adapter ready" not in run.stdout + run.stderr


def test_the_sql_examples_in_the_docs_are_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "adapters.md").read_text(encoding="utf-8")
    text = text[text.index("## SQL databases"):text.index("## Files")]
    blocks = re.findall(r"```(toml|yaml)\n(.*?)```", text, re.S)
    assert [fmt for fmt, _ in blocks] == ["toml", "yaml"]
    (tmp_path / "register.password").write_text("secret\n")
    (tmp_path / "register.password").chmod(0o600)
    for fmt, body in blocks:
        config = parse_config(body, tmp_path / f"adapter.{fmt}", fmt)
        assert config.services[0].code == "persons"


def test_serve_stops_when_a_silo_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "adapter.toml"
    path.write_text(adapter_toml("sqlite:///no-such.db", "sqlite", port=free_port()))
    run = _xchange("adapter", "serve", str(path), cwd=tmp_path)
    assert run.returncode == 1
    assert "xchange: error [adapter.unavailable]: service 'register' cannot start: database " \
           "unavailable" in run.stderr
    assert not (tmp_path / "no-such.db").exists()  # read-only: not even created


def test_allowed_networks() -> None:
    config = parse_config("[adapter]\nallowed_networks = [\"192.0.2.0/24\", \"2001:db8::1\"]\n\n"
                          + GOOD, Path("/a.toml"), "toml")
    assert config.allows("192.0.2.10") and config.allows("2001:db8::1")
    assert not config.allows("127.0.0.1")
    assert parse_config(GOOD, Path("/a.toml"), "toml").allows("127.0.0.1")
    err = refusal("[adapter]\nallowed_networks = [\"10.0.0.0/8\", \"intranet\"]\n\n" + GOOD)
    assert str(err).startswith("/etc/xchange/adapter.toml:2: adapter.allowed_networks[1]: "
                               "not an address or network")
