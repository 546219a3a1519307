"""A PostgreSQL schema of a benchmark run's own, so that runs leave nothing in the shared database.

    with private_schema('bench_vectors') as uri:
        db = superduper(uri)   # tables, superduperdb's metadata and triggers all land in it

The URI sets ``search_path`` to the schema, so every connection made from it (other
processes included) works inside it, and superduperdb's own tables are put there too; the
schema is dropped with everything in it at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PG = os.environ.get('SUPERDUPERDB_TEST_POSTGRES_URI', 'postgresql://postgres@127.0.0.1:5432/test')


def admin(statement: str) -> None:
    """Run one statement on the PostgreSQL database itself (autocommit)."""
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(statement)


def schema_uri(schema: str) -> str:
    """The URI of the database whose connections work inside ``schema``."""
    return f'{PG}{"&" if "?" in PG else "?"}options=-csearch_path%3D{schema}'


@contextlib.contextmanager
def private_schema(prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<pid>``, yield a URI whose connections use it, drop it afterwards.

    superduperdb's own tables go in it too (``internal_schema`` names it, here and, through
    the environment, in processes the benchmark starts): by default they would go to the
    database's shared ``superduperdb`` schema, where another run's records would be found.
    """
    from superduperdb import CFG

    schema = f'{prefix}_{os.getpid()}'
    admin(f'CREATE SCHEMA IF NOT EXISTS {schema}')
    before = os.environ.get('SUPERDUPERDB_INTERNAL_SCHEMA')
    os.environ['SUPERDUPERDB_INTERNAL_SCHEMA'] = schema
    try:
        with CFG.override(internal_schema=schema):
            yield schema_uri(schema)
    finally:
        if before is None:
            os.environ.pop('SUPERDUPERDB_INTERNAL_SCHEMA', None)
        else:
            os.environ['SUPERDUPERDB_INTERNAL_SCHEMA'] = before
        admin(f'DROP SCHEMA IF EXISTS {schema} CASCADE')
