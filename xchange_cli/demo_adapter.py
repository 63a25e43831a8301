"""The demo's provider system: the population register's SQLite database behind an adapter.

:func:`write_demo_adapter` generates the database (the three persons of
:data:`xchange_cli.demo_provider.PERSONS` and more, made up at every demo start) and the
adapter configuration that publishes it as service ``persons``:

* ``GET /persons/persons/{code}``: one person (404 when unknown);
* ``GET /persons/persons?name=``: persons whose name contains ``name``, paged;
* ``GET /persons/openapi.json``: the service's OpenAPI document.

The consumer's ``benefits`` subsystem may receive every field, ``analytics`` only the code
and the year of birth; each answer names its data subjects (personal codes).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from xchange_cli.demo_provider import PERSONS

__all__ = ["write_demo_adapter"]

_FIRST = ("Mari", "Jaan", "Liis", "Peeter", "Kadri", "Toomas", "Anu", "Mart", "Eve", "Rein")
_LAST = ("Tamm", "Saar", "Sepp", "Mägi", "Kask", "Rebane", "Ilves", "Pärn", "Kuusk", "Lepp")
_TOWNS = ("Tallinn", "Tartu", "Pärnu", "Narva", "Viljandi")


def _people(count: int, seed: int) -> list[tuple[str, str, str, str]]:
    rows = [(str(p["code"]), str(p["name"]), str(p["born"]), str(p["address"]))
            for p in PERSONS.values()]
    rng = random.Random(seed)  # noqa: S311 (made-up demo data, not secrets)
    for i in range(count):
        year, month, day = 1940 + rng.randrange(80), 1 + rng.randrange(12), 1 + rng.randrange(28)
        sex = rng.choice((3, 4)) if year < 2000 else rng.choice((5, 6))
        code = f"{sex}{year % 100:02d}{month:02d}{day:02d}{i:04d}"
        rows.append((code, f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                     f"{year}-{month:02d}-{day:02d}",
                     f"{rng.choice(('Pikk', 'Aia', 'Kooli', 'Posti'))} {1 + rng.randrange(99)}, "
                     f"{rng.choice(_TOWNS)}"))
    return rows


_FIELDS = ('fields = [{ name = "code", type = "string" }, { name = "name", type = "string" }, '
           '{ name = "born", type = "date" }, { name = "address", type = "string" }]')
_SQL = """[services.sql]
url = "sqlite:///register.db"

[[services.sql.queries]]
name = "person"
path = "/persons/{code}"
summary = "One person by personal code"
sql = "SELECT code, name, born, address FROM persons WHERE code = :code"
parameters = [{ name = "code", type = "string" }]
FIELDS

[[services.sql.queries]]
name = "search"
path = "/persons"
many = true
summary = "Persons whose name contains the text given"
sql = \"\"\"
SELECT code, name, born, address FROM persons
WHERE name LIKE '%' || :name || '%'
ORDER BY code
\"\"\"
parameters = [{ name = "name", type = "string" }]
FIELDS
""".replace("FIELDS", _FIELDS)


def write_demo_adapter(directory: Path, port: int, *, benefits: str, analytics: str,
                       count: int = 200, seed: int = 2024) -> Path:
    """Write ``register.db`` and ``adapter.toml`` into ``directory``; return the latter."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "register.db"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE persons (code TEXT PRIMARY KEY, name TEXT NOT NULL, "
                     "born TEXT NOT NULL, address TEXT NOT NULL)")
        conn.executemany("INSERT INTO persons VALUES (?, ?, ?, ?)", _people(count, seed))
    conn.close()
    config = directory / "adapter.toml"
    head = f"""# The population register's database, published by an adapter (docs/adapters.md).
[adapter]
host = "127.0.0.1"
port = {port}
title = "Population register"

[[services]]
code = "persons"
kind = "sql"
title = "Population register: persons"
row_limit = 50
default_limit = 10
timeout_seconds = 5
data_subject_field = "code"

[services.consumers]
"{benefits}" = ["*"]
"{analytics}" = ["code", "born"]

"""
    config.write_text(head + _SQL, encoding="utf-8")
    return config
