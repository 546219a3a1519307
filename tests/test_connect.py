"""Connecting: every accepted form, and clear errors for the rest."""

from __future__ import annotations

import socket
import time

import pytest

from superduperdb import CFG, Collection, superduper
from superduperdb.base.exceptions import ConfigError, ConnectionFailed


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections but never says a word (a hung server)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize('scheme', ['postgresql', 'mysql'])
def test_server_that_does_not_answer_fails_fast_naming_host_and_port(silent_server, scheme):
    start = time.monotonic()
    with (
        CFG.override(connect_timeout=2),
        pytest.raises(ConnectionFailed, match=f'127.0.0.1:{silent_server}') as info,
    ):
        superduper(f'{scheme}://user@127.0.0.1:{silent_server}/test')
    assert time.monotonic() - start < 10
    assert info.value.port == silent_server


def test_refused_port_and_missing_mongodb_server_fail_fast():
    start = time.monotonic()
    with CFG.override(connect_timeout=1):
        with pytest.raises(ConnectionFailed, match='127.0.0.1:1'):
            superduper('postgresql://postgres@127.0.0.1:1/test')
        with pytest.raises(ConnectionFailed, match='127.0.0.1:1'):
            superduper('mongodb://127.0.0.1:1/test')
    assert time.monotonic() - start < 10


@pytest.mark.parametrize('uri', ['nosuchdb://scott@host/db', 'not a uri', 'http//missing-colon'])
def test_unknown_uri_scheme(uri):
    with pytest.raises(ConfigError, match='Unknown database URI scheme'):
        superduper(uri)


def test_a_dialect_whose_driver_is_missing_names_the_driver():
    # SQLAlchemy ships an Oracle dialect (the generic path takes it); its driver is not installed
    with pytest.raises(ConfigError, match="needs the driver 'oracledb'.*pip install 'oracledb'"):
        superduper('oracle://scott@host/db')


def test_unwrappable_object():
    with pytest.raises(ConfigError, match='does not know how to wrap a builtins.dict'):
        superduper({'a': 1})


def test_mongodb_uri_needs_a_database():
    with pytest.raises(ConfigError, match='names no database'):
        superduper('mongodb://127.0.0.1:27017')


def test_embedded_default_and_accepted_forms(tmp_path, monkeypatch):
    import mongomock
    import sqlalchemy as sa

    monkeypatch.chdir(tmp_path)
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/a'):
        db = superduper()  # the embedded default: a SQLite file under ./.superduperdb
        db.execute(Collection('notes').insert_one({'text': 'hi'}))
        assert (tmp_path / '.superduperdb' / 'db.sqlite').exists()
        assert superduper(sa.create_engine(f'sqlite:///{tmp_path}/e.db')).databackend.name == 'sqlite'
        assert superduper(mongomock.MongoClient().somedb).databackend.name == 'mongodb'
        a, b = superduper('mongomock://shared'), superduper('mongomock://shared')
        a.execute(Collection('c').insert_one({'x': 1}))
        assert b.execute(Collection('c').count()) == 1  # one in-memory server per process


def test_metadata_store_in_another_database(tmp_path):
    import numpy as np

    from superduperdb.encoders.numpy import array

    with CFG.override(metadata_store=f'sqlite:///{tmp_path}/meta.sqlite', artifact_store='database'):
        db = superduper(f'duckdb:///{tmp_path}/data.duckdb')
        db.execute(Collection('v').insert_one({'x': array('int16', 2)(np.array([1, 2], dtype='int16'))}))
        assert db.databackend.list_tables() == ['v']  # no _superduper tables in the data database
        assert '_superduper_components' in db.metadata.backend.list_tables()
        db.add(superduper(lambda x: x, identifier='same'))  # an artifact: its table is made now
        assert '_superduper_artifacts' in db.metadata.backend.list_tables()
        assert db.execute(Collection('v').find_one())['x'].x.tolist() == [1, 2]


@pytest.mark.parametrize('backend', ['postgres', 'mysql'], indirect=True)
def test_reads_survive_the_server_dropping_the_pooled_connections(db, table_name):
    """Connections in steady use are not pinged before each statement (a round trip each); when
    the server drops them (an admin's kill, a proxy, a restart), the next read runs again on a
    new connection instead of failing, and a connection idle for a while is pinged first."""
    import sqlalchemy as sa

    from superduperdb import VectorIndex, Watcher

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'_id': str(i), 'x': i, 'v': [float(i), 1.0]} for i in range(20)]))
    identity = superduper(lambda v: v, identifier='identity')
    db.add(VectorIndex('vecs', indexing_watcher=Watcher(model=identity, key='v', select=coll.find())))
    engine = db.databackend.engine
    mysql = engine.dialect.name != 'postgresql'
    whoami = 'SELECT CONNECTION_ID()' if mysql else 'SELECT pg_backend_pid()'

    def drop_every_pooled_connection() -> int:
        """Kill, from another connection, the server sessions of the connections in the pool."""
        held = [engine.connect() for _ in range(engine.pool.checkedin())]
        ids = [conn.exec_driver_sql(whoami).scalar() for conn in held]
        for conn in held:
            conn.close()  # back into the pool, still open on this side
        admin = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            for id_ in ids:
                conn.exec_driver_sql(f'KILL {id_}' if mysql else f'SELECT pg_terminate_backend({id_})')
        admin.dispose()
        return len(ids)

    assert db.databackend.get(table_name, '3')['x'] == 3
    assert drop_every_pooled_connection() >= 1
    assert db.databackend.get(table_name, '3')['x'] == 3  # a prebuilt lookup by key
    drop_every_pooled_connection()
    found = list(db.execute(coll.like([3.0, 1.0], 'vecs', n=2)))  # the change counter, rows and outputs
    assert len(found) == 2 and found[0]['_outputs']['v']['identity'] is not None
    drop_every_pooled_connection()
    assert len(list(db.execute(coll.find({'x': {'$gte': 10}})))) == 10  # through SQLAlchemy
    drop_every_pooled_connection()
    time.sleep(0.4)  # idle past IDLE_PING_S: pinged (and replaced) before use
    with engine.begin() as conn:  # a write, on a connection checked out after the idle time
        conn.execute(sa.text(f'UPDATE {table_name} SET x = 30 WHERE _id = :k'), {'k': '3'})
    assert db.databackend.get(table_name, '3')['x'] == 30


@pytest.mark.parametrize('backend', ['mysql'], indirect=True)
def test_mariadb_connections_share_one_tls_context(db):
    """PyMySQL's preferred TLS mode built a context (loading the system's CA certificates) per
    connection: 20 ms each, most of opening a MariaDB database. One context, built as PyMySQL
    builds it, serves every connection now; TLS options the user gives are left to PyMySQL."""
    import ssl

    import sqlalchemy as sa

    from superduperdb.backends.uri import backend_from

    engine = db.databackend.engine
    with engine.connect() as first, engine.connect() as second:  # two at once: two connections
        contexts = [c.connection.dbapi_connection.ctx for c in (first, second)]
    other = backend_from(str(engine.url.render_as_string(hide_password=False))).engine
    with other.connect() as third:
        contexts.append(third.connection.dbapi_connection.ctx)
    other.dispose()
    assert contexts[0] is contexts[1] is contexts[2]
    assert isinstance(contexts[0], ssl.SSLContext) and not contexts[0].check_hostname  # preferred mode's
    # the user's own TLS option: PyMySQL builds that connection's context (and requires TLS)
    url = engine.url.update_query_dict({'ssl_disabled': 'true'})
    plain = sa.create_engine(url)
    from superduperdb.backends.uri import _share_tls_context

    _share_tls_context(plain)
    with plain.connect() as conn:
        assert not conn.connection.dbapi_connection.ssl  # asked for no TLS: none
    plain.dispose()
