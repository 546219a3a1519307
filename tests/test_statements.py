"""How many statements the common paths send to a SQL database: each one is a round trip to a
server. Counted, not timed (timings stay in benchmarks/): a count that grows is a path that
got slower on every server, whatever the machine's load."""

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import Collection, Document, superduper
from superduperdb.encoders.numpy import array
from tests.helpers import engine_uri

THREE = ['sqlite', 'postgres', 'mysql']


class Statements(list):
    """The statements an engine sends while counted (``with Statements(engine) as sent:``)."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__()
        self.engine = engine

    def _seen(self, conn, cursor, statement, parameters, context, many) -> None:
        self.append(statement)

    def __enter__(self) -> 'Statements':
        sa.event.listen(self.engine, 'before_cursor_execute', self._seen)
        return self

    def __exit__(self, *exc) -> None:
        sa.event.remove(self.engine, 'before_cursor_execute', self._seen)


#: at most this many statements (before, 2026-12-07: 178 on SQLite, 157 on PostgreSQL, 102 on
#: MariaDB for the first write; 44, 37, 35 for the backfill): superduperdb's own tables were
#: reflected whole after being made, 12 catalog queries each on PostgreSQL
FIRST_WRITE = {'sqlite': 120, 'postgres': 85, 'mysql': 100}
BACKFILL = {'sqlite': 42, 'postgres': 28, 'mysql': 36}
#: a backfill in a process that has not read the user's table yet (before, 2026-12-07 evening:
#: 53, 38, 40: the user's table was reflected whole)
FRESH_BACKFILL = {'sqlite': 44, 'postgres': 30, 'mysql': 38}


@pytest.mark.parametrize('backend', THREE, indirect=True)
def test_a_first_write_and_a_backfill_send_few_statements(db, backend, table_name):
    coll = Collection(table_name)
    vec = array('float32', 4)
    engine = db.databackend.engine
    with Statements(engine) as first:
        db.execute(coll.insert_many([Document({'t': 'abc', 'v': vec(np.arange(4, dtype='float32'))})]))
    with Statements(engine) as backfill:
        superduper(len, identifier='len').predict(X='t', db=db, select=coll.find(), watch=True)
    assert len(first) <= FIRST_WRITE[backend], '\n'.join(first)
    assert len(backfill) <= BACKFILL[backend], '\n'.join(backfill)
    # what the tables were made for works, here and in another connection
    assert [d.unpack()['_outputs']['t']['len'] for d in db.execute(coll.find())] == [3]
    other = superduper(engine_uri(db))
    try:
        # a backfill in a process that has not read the table yet: the user's table is reflected
        # by its columns and key (SQLAlchemy's whole reflection: 12 catalog queries on PostgreSQL)
        with Statements(other.databackend.engine) as fresh:
            superduper(str.upper, identifier='upper').predict(X='t', db=other, select=coll.find(), watch=True)
        assert len(fresh) <= FRESH_BACKFILL[backend], '\n'.join(fresh)
        (row,) = list(other.execute(coll.find()))
        assert np.array_equal(row.unpack()['v'], np.arange(4, dtype='float32'))
        assert row.unpack()['_outputs']['t']['upper'] == 'ABC'
    finally:
        other.close()
