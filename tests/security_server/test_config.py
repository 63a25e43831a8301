"""Tests of security_server.config: the TOML file, paths, defaults, identifiers, refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certs.keys import SecretSource, write_secret_file
from security_server.config import (
    ConfigError,
    ListenConfig,
    SecurityServerConfig,
    ServiceConfig,
    SigningKeyConfig,
)
from xchange.errors import AccessDeniedError
from xchange.identifiers import ClientId, GlobalGroupId, SecurityServerId, ServiceId

MEMBER = ClientId("TEST", "GOV", "1234")
PERSONS = ServiceId(MEMBER.subsystem_of("registry"), "persons")
ADDRESSES = ServiceId(MEMBER.subsystem_of("registry"), "addresses")
BENEFITS = ClientId("TEST", "COM", "5678", "benefits")
GROUP = GlobalGroupId("TEST", "benefit-clients")

# Each line that a test removes or replaces is unique in the file.
FULL = """\
clients = ["TEST/GOV/1234/registry", "TEST/GOV/1234"]

[server]
id = "TEST/GOV/1234/ss1"
state_dir = "state"

[client_proxy]
host = "127.0.0.1"
port = 8080
peer_timeout = 5
max_body_bytes = 1024

[server_proxy]
host = "192.0.2.10"
port = 5500

[keys]
auth_key = "keys/auth.key"
auth_cert = "/etc/xchange/auth.pem"

[[keys.signing]]
member = "TEST/GOV/1234"
key = "keys/sign.key"
cert = "../shared/sign.pem"

[globalconf]
anchor = "anchor.json"
refresh_seconds = 30

[messagelog]
database_url = "sqlite:///messagelog.db"

[[services]]
id = "TEST/GOV/1234/registry/persons"
url = "http://127.0.0.1:9000/"
timeout = 2.5

[[services]]
id = "TEST/GOV/1234/registry/addresses"
url = "http://127.0.0.1:9001/"

[[access]]
service = "TEST/GOV/1234/registry/persons"
clients = ["TEST/COM/5678/benefits", "TEST/benefit-clients"]
"""

MINIMAL = """\
clients = []
[server]
id = "TEST/GOV/1234/ss1"
[client_proxy]
host = "127.0.0.1"
port = 8080
[server_proxy]
host = "127.0.0.1"
port = 5500
[keys]
auth_key = "auth.key"
auth_cert = "auth.pem"
signing = []
[globalconf]
anchor = "anchor.json"
[messagelog]
database_url = "sqlite:///messagelog.db"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "security-server.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> SecurityServerConfig:
    return SecurityServerConfig.from_file(write(tmp_path, text))


def no_groups(group: GlobalGroupId) -> frozenset[ClientId]:
    return frozenset()


# -- a valid file ---------------------------------------------------------------------------------


def test_full_file_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    folder = (tmp_path / "conf").resolve()
    assert config.server_id == SecurityServerId(MEMBER, "ss1")
    assert config.client_proxy == ListenConfig("127.0.0.1", 8080)
    assert config.server_proxy == ListenConfig("192.0.2.10", 5500)
    assert config.auth_key == folder / "keys" / "auth.key"
    assert config.auth_cert == Path("/etc/xchange/auth.pem")
    assert config.signing_keys == (
        SigningKeyConfig(MEMBER, folder / "keys" / "sign.key", folder / "../shared/sign.pem"),
    )
    assert config.anchor == folder / "anchor.json"
    assert config.state_dir == folder / "state"
    # a relative SQLite path is relative to the file, like every other path
    assert config.database_url == f"sqlite:///{folder / 'messagelog.db'}"
    assert config.clients == (MEMBER.subsystem_of("registry"), MEMBER)
    assert config.services == (
        ServiceConfig(PERSONS, "http://127.0.0.1:9000/", 2.5),
        ServiceConfig(ADDRESSES, "http://127.0.0.1:9001/", 30.0),
    )
    assert (config.conf_refresh_seconds, config.peer_timeout, config.max_body_bytes) == (
        30.0, 5.0, 1024,
    )
    assert isinstance(config.peer_timeout, float)


def test_paths_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, FULL)
    monkeypatch.chdir(tmp_path)
    config = SecurityServerConfig.from_file(path.relative_to(tmp_path))
    assert config.anchor == (tmp_path / "conf" / "anchor.json").resolve()
    assert config.anchor.is_absolute()


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.state_dir == (tmp_path / "conf").resolve()
    assert config.signing_keys == ()
    assert config.clients == ()
    assert config.services == ()
    assert config.conf_refresh_seconds == 60.0
    assert config.peer_timeout == 60.0
    assert config.max_body_bytes == 64 * 1024 * 1024
    assert (config.timestamping, config.timestamping_max_failure_seconds) == ("batch", 14400.0)
    assert config.event_loop == "auto"
    with pytest.raises(AccessDeniedError):  # deny by default
        config.access.check(BENEFITS, PERSONS, "GET", "", no_groups)


def test_service_lookup_ignores_versions(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    found = config.service(ServiceId(PERSONS.provider, "persons", "v2"))
    assert found is not None
    assert found.url == "http://127.0.0.1:9000/"
    assert config.service(ServiceId(PERSONS.provider, "unknown")) is None


# -- access rules: clients and global groups ------------------------------------------------------


def test_access_subjects_are_clients_or_global_groups(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    asked: list[GlobalGroupId] = []

    def members(group: GlobalGroupId) -> frozenset[ClientId]:
        asked.append(group)
        return frozenset({ClientId("TEST", "GOV", "9999", "app")}) if group == GROUP else (
            frozenset()
        )

    config.access.check(BENEFITS, PERSONS, "GET", "", members)  # named directly
    config.access.check(ClientId("TEST", "GOV", "9999", "app"), PERSONS, "GET", "",
                        members)  # via group
    assert asked == [GROUP], "'TEST/benefit-clients' must be read as a global group"
    with pytest.raises(AccessDeniedError):
        config.access.check(ClientId("TEST", "GOV", "9999", "other"), PERSONS, "GET", "",
                            members)
    with pytest.raises(AccessDeniedError):  # a grant is per service
        config.access.check(BENEFITS, ADDRESSES, "GET", "", members)


# -- refusals -------------------------------------------------------------------------------------


def _drop_section(text: str, header: str) -> str:
    lines = text.splitlines(keepends=True)
    start = lines.index(header + "\n")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines)
    )
    return "".join(lines[:start] + lines[end:])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (FULL.replace('clients = ["TEST/GOV/1234/registry", "TEST/GOV/1234"]\n', ""), "clients"),
        (_drop_section(FULL, "[server]"), "server"),
        (FULL.replace('id = "TEST/GOV/1234/ss1"\n', ""), "server.id"),
        (_drop_section(FULL, "[client_proxy]"), "client_proxy"),
        (FULL.replace('host = "127.0.0.1"\n', ""), "client_proxy.host"),
        (FULL.replace("port = 8080\n", ""), "client_proxy.port"),
        (_drop_section(FULL, "[server_proxy]"), "server_proxy"),
        (FULL.replace('host = "192.0.2.10"\n', ""), "server_proxy.host"),
        (FULL.replace("port = 5500\n", ""), "server_proxy.port"),
        (_drop_section(_drop_section(FULL, "[keys]"), "[[keys.signing]]"), "keys"),
        (FULL.replace('auth_key = "keys/auth.key"\n', ""), "keys.auth_key"),
        (FULL.replace('auth_cert = "/etc/xchange/auth.pem"\n', ""), "keys.auth_cert"),
        (_drop_section(FULL, "[[keys.signing]]"), "keys.signing"),
        (FULL.replace('member = "TEST/GOV/1234"\n', ""), "keys.signing.member"),
        (FULL.replace('key = "keys/sign.key"\n', ""), "keys.signing.key"),
        (FULL.replace('cert = "../shared/sign.pem"\n', ""), "keys.signing.cert"),
        (_drop_section(FULL, "[globalconf]"), "globalconf"),
        (FULL.replace('anchor = "anchor.json"\n', ""), "globalconf.anchor"),
        (_drop_section(FULL, "[messagelog]"), "messagelog"),
        (FULL.replace('database_url = "sqlite:///messagelog.db"\n', ""), "messagelog.database_url"),
        (FULL.replace('id = "TEST/GOV/1234/registry/addresses"\n', ""), "services.id"),
        (FULL.replace('url = "http://127.0.0.1:9001/"\n', ""), "services.url"),
        (FULL.replace('service = "TEST/GOV/1234/registry/persons"\n', ""), "access.service"),
        (FULL.replace('clients = ["TEST/COM/5678/benefits", "TEST/benefit-clients"]\n', ""),
         "access.clients"),
    ],
)
def test_each_missing_required_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"missing key {key}$"):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("port = 8080", 'port = "8080"', "client_proxy.port must be a int"),
        ("port = 8080", "port = true", "client_proxy.port must be a int"),
        ('id = "TEST/GOV/1234/ss1"', "id = 1234", "server.id must be a str"),
        ('state_dir = "state"', "state_dir = 1", "server.state_dir must be a str"),
        ("refresh_seconds = 30", 'refresh_seconds = "fast"', "globalconf.refresh_seconds"),
        ("peer_timeout = 5", "peer_timeout = [5]", "client_proxy.peer_timeout"),
        ("max_body_bytes = 1024", "max_body_bytes = 1024.5", "client_proxy.max_body_bytes"),
        ("timeout = 2.5", 'timeout = "2.5"', "services.timeout must be a float"),
        ("timeout = 2.5", "timeout = false", "services.timeout must be a float"),
        ('"TEST/benefit-clients"]', "42]", "access.clients must be a list of strings"),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert FULL.count(old) == 1
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, FULL.replace(old, new))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('keys = "none"\n' + _drop_section(MINIMAL, "[keys]"), "keys must be a dict"),
        ("server = 1\n" + _drop_section(MINIMAL, "[server]"), "server must be a dict"),
        ("services = [1]\n" + MINIMAL, "each entry of services must be a table"),
        ('access = ["x"]\n' + MINIMAL, "each entry of access must be a table"),
        (MINIMAL.replace("signing = []", "signing = [[]]"),
         "each entry of keys.signing must be a table"),
    ],
)
def test_sections_of_the_wrong_shape_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('id = "TEST/GOV/1234/ss1"', 'id = "TEST/GOV/1234"'),
        ('id = "TEST/GOV/1234/ss1"', 'id = "TEST/GOV/1234/sub/ss1"'),
        ('member = "TEST/GOV/1234"', 'member = "TEST/GOV"'),
        ('"TEST/GOV/1234/registry", "TEST/GOV/1234"]', '"TEST/GOV/1234/registry", "TEST"]'),
        ('"TEST/GOV/1234/registry", "TEST/GOV/1234"]', '"TEST/GOV/1234/registry", 7]'),
        ('"TEST/GOV/1234/registry", "TEST/GOV/1234"]', '"TEST/GOV/12;34"]'),
        ('"TEST/GOV/1234/registry", "TEST/GOV/1234"]', '"TEST/GOV/1234/a/b"]'),
        ('id = "TEST/GOV/1234/registry/persons"', 'id = "TEST/GOV/1234/persons"'),
        ('id = "TEST/GOV/1234/registry/persons"', 'id = "TEST/GOV/1234/registry/per sons"'),
        ('service = "TEST/GOV/1234/registry/persons"', 'service = "TEST/GOV/1234/registry"'),
        ('"TEST/COM/5678/benefits"', '"benefits"'),
        ('"TEST/COM/5678/benefits"', '"TEST/COM/5678/benefits/extra"'),
        ('"TEST/benefit-clients"', '"TEST/benefit clients"'),
        ('"TEST/benefit-clients"', '"TEST/"'),
        ('"TEST/benefit-clients"', '"/benefit-clients"'),
    ],
)
def test_malformed_identifiers_are_config_errors(tmp_path: Path, old: str, new: str) -> None:
    assert FULL.count(old) == 1
    path = write(tmp_path, FULL.replace(old, new))
    with pytest.raises(ConfigError, match=str(path)):
        SecurityServerConfig.from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clients = [", "security-server.toml"),
        ("[server]\n[server]\n", "security-server.toml"),
        ("\xff", "security-server.toml"),
    ],
)
def test_unreadable_toml_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        SecurityServerConfig.from_file(tmp_path / "absent.toml")


# -- the environment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "sqlite:///{folder}/messagelog.db"),
        ({"XCHANGE_DATABASE_URL": ""}, "sqlite:///{folder}/messagelog.db"),
        ({"XCHANGE_DATABASE_URL": "postgresql://ss@db/ss"}, "postgresql://ss@db/ss"),
        ({"DATABASE_URL": "postgresql://ss@db/ss"}, "sqlite:///{folder}/messagelog.db"),
    ],
)
def test_from_env_overrides_only_the_database_url(
    tmp_path: Path, environ: dict[str, str], url: str
) -> None:
    config = load(tmp_path, FULL)
    folder = (tmp_path / "conf").resolve()
    overridden = config.from_env(environ)
    assert overridden.database_url == url.format(folder=folder)
    assert overridden.services == config.services
    assert overridden.anchor == config.anchor
    assert config.database_url == f"sqlite:///{folder}/messagelog.db", "the original stays"


def test_from_env_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCHANGE_DATABASE_URL", "postgresql://ss@db/from-env")
    assert load(tmp_path, FULL).from_env().database_url == "postgresql://ss@db/from-env"


def test_encryption_key_file(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL).encryption_keys is None
    config = load(tmp_path, MINIMAL + 'encryption_keys = "keys/log.toml"\n')
    assert config.encryption_keys == (tmp_path / "conf").resolve() / "keys" / "log.toml"
    overridden = config.from_env({"XCHANGE_MESSAGELOG_KEYS": "/run/secrets/log.toml"})
    assert overridden.encryption_keys == Path("/run/secrets/log.toml")
    assert overridden.database_url == config.database_url
    assert config.from_env({"XCHANGE_MESSAGELOG_KEYS": ""}) == config
    with pytest.raises(ConfigError, match="encryption_keys must be a str"):
        load(tmp_path, MINIMAL + "encryption_keys = 1\n")


def test_timestamping_settings(tmp_path: Path) -> None:
    text = MINIMAL + 'timestamping = "sync"\ntimestamping_max_failure_seconds = 600\n'
    config = load(tmp_path, text)
    assert (config.timestamping, config.timestamping_max_failure_seconds) == ("sync", 600.0)
    with pytest.raises(ConfigError, match='"batch" or "sync"'):
        load(tmp_path, MINIMAL + 'timestamping = "never"\n')
    with pytest.raises(ConfigError, match="timestamping_max_failure_seconds must be positive"):
        load(tmp_path, MINIMAL + "timestamping_max_failure_seconds = 0\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("timeout = 2.5", "timout = 2.5"), r"unknown key\(s\) in \[\[services\]\]: timout"),
        (("timeout = 2.5", "timeout = 0"), "services.timeout must be positive"),
        (("port = 8080", "port = 70000"), "port must be from 1 to 65535"),
        (('url = "http://127.0.0.1:9000/"', 'url = "file:///etc/passwd"'),
         "must be an http:// or https:// URL"),
    ],
)
def test_entries_and_values_are_checked(tmp_path: Path, change: tuple[str, str],
                                        message: str) -> None:
    assert change[0] in FULL
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, FULL.replace(change[0], change[1], 1))


@pytest.mark.parametrize("choice", ["auto", "uvloop", "asyncio"])
def test_event_loop_setting(tmp_path: Path, choice: str) -> None:
    text = MINIMAL.replace('id = "TEST/GOV/1234/ss1"\n',
                           f'id = "TEST/GOV/1234/ss1"\nevent_loop = "{choice}"\n')
    assert load(tmp_path, text).event_loop == choice


def test_unknown_event_loop_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('id = "TEST/GOV/1234/ss1"\n',
                           'id = "TEST/GOV/1234/ss1"\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError, match=r'server\.event_loop must be "auto", "uvloop"'):
        load(tmp_path, text)


# -- protected keys: passphrase sources and keys in a token ---------------------------------

TOKEN_KEY = (
    'pkcs11 = { module = "/usr/lib/softhsm/libsofthsm2.so", token_label = "agency", '
    'key_label = "sign-2026", pin_file = "token.pin" }'
)


def test_passphrase_source_and_unsafe_switch_parse(tmp_path: Path) -> None:
    base = (tmp_path / "conf").resolve()
    config = load(tmp_path, FULL.replace('[keys]\n', '[keys]\npassphrase_file = "secret"\n'))
    assert config.key_passphrase_source == SecretSource(file=base / "secret")
    assert config.key_passphrase is None  # read by from_env, not by the file loader
    assert config.unsafe_plaintext_keys is False
    config = load(tmp_path, FULL.replace(
        '[keys]\n', '[keys]\npassphrase_env = "SS_KEYS"\nunsafe_plaintext_keys = true\n'))
    assert config.key_passphrase_source == SecretSource(env="SS_KEYS")
    assert config.unsafe_plaintext_keys is True
    assert load(tmp_path, FULL).key_passphrase_source is None


def test_signing_batch_max_parses(tmp_path: Path) -> None:
    assert load(tmp_path, FULL).signing_batch_max == 64
    for value in (1, 1024):
        config = load(tmp_path, FULL.replace("[keys]\n", f"[keys]\nsigning_batch_max = {value}\n"))
        assert config.signing_batch_max == value


def test_signing_key_in_a_token_parses(tmp_path: Path) -> None:
    config = load(tmp_path, FULL.replace('key = "keys/sign.key"', TOKEN_KEY))
    [signing] = config.signing_keys
    assert signing.key is None and signing.pkcs11 is not None
    assert signing.pkcs11.module == Path("/usr/lib/softhsm/libsofthsm2.so")
    assert (signing.pkcs11.token_label, signing.pkcs11.key_label) == ("agency", "sign-2026")
    assert signing.pkcs11.pin_source == SecretSource(file=(tmp_path / "conf").resolve()
                                                     / "token.pin")


# -- administration, IS connections ---------------------------------------------------------------

ADMIN = """
[admin_api]
host = "127.0.0.1"
port = 4000
token_key = "keys/admin.key"

[is_connection]
"TEST/GOV/1234/registry" = "HTTP"
"""


def test_admin_api_tls_port_and_connection_types(tmp_path: Path) -> None:
    text = FULL.replace("max_body_bytes = 1024\n", "max_body_bytes = 1024\ntls_port = 8443\n")
    config = load(tmp_path, text + ADMIN)
    conf_dir = (tmp_path / "conf").resolve()
    assert config.admin_api is not None and config.admin_api.port == 4000
    assert config.admin_key == conf_dir / "keys" / "admin.key"
    assert config.client_proxy_tls is not None and config.client_proxy_tls.port == 8443
    assert config.internal_tls_cert == conf_dir / "state" / "internal-tls.pem"
    assert config.is_connection == {ClientId.parse("TEST/GOV/1234/registry"): "HTTP"}


def test_registry_section(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert (config.registry_url, config.catalogue_retry_seconds) == (None, 60.0)
    config = load(tmp_path, MINIMAL + '[registry]\nurl = "https://registry.example/"\n'
                  "retry_seconds = 5\n")
    assert (config.registry_url, config.catalogue_retry_seconds) == (
        "https://registry.example", 5.0)
    for text, message in (('url = "ftp://x"', "registry.url must be an http"),
                          ("retry_seconds = 0", "registry.retry_seconds must be positive"),
                          ("urls = 1", "unknown key(s) [registry] urls")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load(tmp_path, MINIMAL + f"[registry]\n{text}\n")


def test_defaults_without_administration(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert (config.admin_api, config.admin_key, config.client_proxy_tls) == (None, None, None)
    assert config.is_connection == {}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[keys]\n", '[keys]\npassphrase_file = "a"\npassphrase_env = "B"\n', "exactly one"),
        ("[keys]\n", '[keys]\npassphrase_env = "NOT A NAME"\n', "not an environment variable"),
        ("[keys]\n", "[keys]\npassphrase = 'hunter2'\n", r"unknown key\(s\) \[keys\] passphrase"),
        ("[keys]\n", '[keys]\nunsafe_plaintext_keys = "yes"\n', "must be a bool"),
        ("[keys]\n", "[keys]\nsigning_batch_max = 0\n", "signing_batch_max must be 1 to 1024"),
        ("[keys]\n", "[keys]\nsigning_batch_max = 1025\n", "signing_batch_max must be 1 to 1024"),
        ("[keys]\n", '[keys]\nsigning_batch_max = "8"\n', "must be a int"),
        ('key = "keys/sign.key"', 'key = "keys/sign.key"\n' + TOKEN_KEY, "not both"),
        ('key = "keys/sign.key"', TOKEN_KEY.replace("pin_file", "pin"),
         r"unknown key\(s\) in keys.signing.pkcs11: pin"),
        ('key = "keys/sign.key"', TOKEN_KEY.replace(', pin_file = "token.pin"', ""),
         "needs pin_file or pin_env"),
        ('key = "keys/sign.key"', TOKEN_KEY.replace('token_label = "agency", ', ""),
         "missing key keys.signing.pkcs11.token_label"),
        ('key = "keys/sign.key"', 'pkcs11 = "softhsm"', "keys.signing.pkcs11 must be a dict"),
    ],
)
def test_protected_key_settings_are_checked(tmp_path: Path, old: str, new: str,
                                            message: str) -> None:
    assert old in FULL
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, FULL.replace(old, new, 1))


def test_from_env_reads_the_passphrase_and_the_pins_and_only_there(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    text = FULL.replace("[keys]\n", '[keys]\npassphrase_env = "SS_KEYS"\n').replace(
        'key = "keys/sign.key"', TOKEN_KEY)
    config = load(tmp_path, text)
    write_secret_file(folder / "token.pin", b"735916\n")
    ready = config.from_env({"SS_KEYS": "s3cret"})
    assert ready.key_passphrase == b"s3cret"
    assert ready.signing_keys[0].pkcs11 is not None
    assert ready.signing_keys[0].pkcs11.pin == b"735916"
    assert "s3cret" not in repr(ready) and "735916" not in repr(ready)
    assert config.from_env({}, secrets=False).key_passphrase is None  # verify-log needs none
    with pytest.raises(ConfigError, match="SS_KEYS is not set"):
        config.from_env({})
    (folder / "token.pin").chmod(0o644)
    with pytest.raises(ConfigError, match=r"token\.pin: a secret file must be readable by its "
                                          r"owner only"):
        config.from_env({"SS_KEYS": "s3cret"})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('host = "127.0.0.1"\nport = 4000', 'host = "0.0.0.0"\nport = 4000', "loopback"),
        ('port = 4000\n', 'port = 0\n', "admin_api.port"),
        ('token_key = "keys/admin.key"\n', "", "token_key"),
        ('= "HTTP"', '= "HTTPS_NOAUTH"', "is_connection"),
        ('"TEST/GOV/1234/registry" = "HTTP"', '"TEST/GOV" = "HTTP"', "identifier"),
        ('token_key', 'tokenkey', "unknown key"),
    ],
)
def test_administration_settings_are_checked(tmp_path: Path, old: str, new: str,
                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, FULL + ADMIN.replace(old, new))
