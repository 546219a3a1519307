"""Keyword, vector and hybrid search through the server, the remote client and the CLI: real
HTTP to a uvicorn server in a thread, on SQLite files, PostgreSQL and MariaDB (their native
full-text engines) and MongoDB (mongomock: BM25), with the hashed-words embedder of
tests/helpers.py for vectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from superduperdb import Collection, KeywordIndex, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import ComponentNotFound, QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from superduperdb.server.app import create_app, running
from superduperdb.server.client import Client
from superduperdb.server.errors import Forbidden
from tests.helpers import error_of, hashed_words, run_cli_80_columns

TOKEN = 'search-token-123'
READ = 'search-read-token'
both = pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql', 'mongodb'], indirect=True)
sqlite = pytest.mark.parametrize('backend', ['sqlite'], indirect=True)

TEXTS = [
    'disk full error on drive C',
    'error 0x80070005 access denied',
    'the printer is out of paper',
    'paper jam in tray two',
    'permission problem when writing files',
    'access is refused to the folder',
]
PART = {'body': '0x80070005 access problem'}


def embedder() -> FunctionModel:
    return FunctionModel(
        'bow', object=lambda xs: hashed_words(xs, 64), batched=True, encoder=array('float32', 64)
    )


def indexed(db: Any, table: str) -> Collection:
    """``table`` with TEXTS, vector index ``vec`` and keyword index ``kw`` over ``body``, and
    the reranker ``shortest`` (the shorter text first)."""
    coll = Collection(table)
    db.execute(coll.insert_many([{'body': text, 'n': i} for i, text in enumerate(TEXTS)]))
    db.add(VectorIndex('vec', indexing_watcher=Watcher(model=embedder(), key='body', select=coll.find())))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    db.add(FunctionModel('shortest', object=lambda query, text: -len(text)))
    return coll


@pytest.fixture
def served(db, table_name) -> Iterator[tuple[Any, Collection, str]]:
    """``(db, collection, url)``: TEXTS indexed, served with ``TOKEN`` and the read-only ``READ``."""
    coll = indexed(db, table_name)
    with running(create_app(db, token=TOKEN, read_token=READ)) as url:
        yield db, coll, url


def post(url: str, query: dict[str, Any], token: str = READ) -> httpx.Response:
    return httpx.post(f'{url}/execute', json={'query': query}, headers={'Authorization': f'Bearer {token}'})


def found(docs: Any) -> list[tuple[Any, ...]]:
    """What a search's documents say: text, score, per-part scores and ranks, in order."""
    return [(d['body'], d['_score'], d.get('_scores'), d.get('_ranks')) for d in docs]


# ----- the server and the client --------------------------------------------------------------
@both
def test_hybrid_search_finds_the_part_number_first_through_the_client(served):
    db, coll, url = served
    q = coll.like(PART, 'vec', n=4).match(PART, 'kw', n=4).find()
    with Client(url, token=READ) as client:  # the read-only token searches
        cursor = client.execute(q)
        docs = list(cursor)
        assert set(cursor.timings) >= {'like_ms', 'match_ms', 'fuse_ms', 'rows_ms'}
    assert docs[0]['body'] == 'error 0x80070005 access denied'
    assert docs[0]['_ranks'] == {'like': 1, 'match': 1}
    assert set(docs[0]['_scores']) == {'like', 'match', 'fused'}
    assert found(docs) == found(db.execute(q))  # the same rows, scores and ranks as in-process

    answer = post(url, q.to_dict())
    assert answer.status_code == 200
    assert set(answer.json()['timings']) >= {'like_ms', 'match_ms', 'fuse_ms', 'rows_ms'}


@both
def test_keyword_weighted_and_reranked_searches_match_the_database(served):
    db, coll, url = served
    queries = [
        coll.match(PART, 'kw', n=3),
        coll.find({'n': {'$gte': 2}}).match(PART, 'kw', n=3),
        coll.find({'n': {'$gte': 2}})
        .like(PART, 'vec', n=3)
        .match(PART, 'kw', n=3)
        .fuse('weighted', weights={'like': 0.3, 'match': 0.7}),
        coll.like(PART, 'vec', n=4).match(PART, 'kw', n=4).fuse('rrf', k=10, n=3).rerank('shortest', top=3),
    ]
    with Client(url, token=READ) as client:
        answers = [list(client.execute(q)) for q in queries]
    for q, docs in zip(queries, answers):
        assert found(docs) == found(db.execute(q)), q
    keyword, filtered, weighted, reranked = answers
    assert keyword[0]['body'] == 'error 0x80070005 access denied' and '_ranks' not in keyword[0]
    assert filtered and all(d['n'] >= 2 for d in filtered)
    assert weighted[0]['_scores']['fused'] == weighted[0]['_score'] and all(d['n'] >= 2 for d in weighted)
    lengths = [len(d['body']) for d in reranked]
    assert len(reranked) == 3 and lengths == sorted(lengths)  # the reranker's order: shortest first
    assert all(d['_scores']['rerank'] == -len(d['body']) for d in reranked)


@sqlite
def test_bad_searches_are_4xx_saying_what_was_wrong(served, table_name):
    db, coll, url = served
    like = {'value': PART, 'index': 'vec', 'n': 3}
    match = {'value': PART, 'index': 'kw', 'n': 3}
    find = {'kind': 'find', 'table': table_name, 'filter': {}}

    status, kind, message = error_of(post(url, {**find, 'match': {**match, 'index': 'nope'}}))
    assert (
        status == 404 and kind == 'ComponentNotFound' and "'nope'" in message and 'kw' in message
    )  # and those there are
    status, kind, message = error_of(post(url, {**find, 'like': {**like, 'index': 'nope'}}))
    assert status == 404 and "'nope'" in message
    status, kind, message = error_of(post(url, {**find, 'match': match, 'fuse': {'method': 'rrf'}}))
    assert status == 400 and '"like"' in message and '"match"' in message
    status, kind, message = error_of(post(url, {**find, 'match': match, 'rerank': {'model': 'gone'}}))
    assert status == 404 and kind == 'ComponentNotFound' and "'gone'" in message
    status, kind, message = error_of(post(url, {**find, 'match': match, 'rerank': {'model': 'bow'}}))
    assert status == 400 and "Reranker 'bow' failed" in message  # an embedder is no reranker
    status, kind, message = error_of(post(url, {**find, 'match': match, 'fuse': {'method': 'best'}}))
    assert status == 400 and 'rrf' in message and 'weighted' in message
    db.execute(Collection('other').insert_one({'body': 'x'}))
    status, kind, message = error_of(post(url, {**find, 'table': 'other', 'match': match}))
    assert status == 400 and f"indexes table {table_name!r}, not 'other'" in message
    status, kind, message = error_of(post(url, {**find, 'match': {**match, 'value': {'title': 'x'}}}))
    assert status == 400 and "indexes 'body'" in message

    with Client(url, token=READ) as client:  # the same errors, raised as the same classes
        with pytest.raises(ComponentNotFound, match="'nope'"):
            list(client.execute(coll.match(PART, 'nope')))
        with pytest.raises(ComponentNotFound, match="'gone'"):
            list(client.execute(coll.match(PART, 'kw').rerank('gone')))
        with pytest.raises(QueryError, match='needs both|send both'):
            list(client.execute(coll.find().match(PART, 'kw').fuse()))


@both
def test_keyword_indexes_are_added_through_the_server_and_reported(served, table_name):
    db, coll, url = served
    with Client(url, token=READ) as reader:
        with pytest.raises(Forbidden):
            reader.add(KeywordIndex('kw2', key='body', select=coll.find(), language='simple'))
        assert list(reader.execute(coll.match({'body': 'paper'}, 'kw', n=5)))  # reading is allowed
    with Client(url, token=TOKEN) as writer:
        added = writer.add(KeywordIndex('kw2', key='body', select=coll.find(), language='simple'))
        assert added.version == 0
        for job in added.jobs_:
            writer.watch_job(job.id)
        docs = list(writer.execute(coll.match({'body': 'paper tray'}, 'kw2', n=2)))
    assert docs[0]['body'] == 'paper jam in tray two'
    assert 'kw2' in db.show('keyword_index')

    headers = {'Authorization': f'Bearer {READ}'}
    status = httpx.get(f'{url}/status', headers=headers).json()
    assert {r['keyword_index'] for r in status['keyword_indexes']} == {'kw', 'kw2'}
    assert all(r['table'] == table_name for r in status['keyword_indexes'])
    overview = httpx.get(f'{url}/overview', headers=headers).json()
    shown = {ix['identifier']: ix for ix in overview['keyword_indexes']}
    assert set(shown) == {'kw', 'kw2'}
    assert shown['kw2']['key'] == 'body' and shown['kw2']['language'] == 'simple'
    assert shown['kw']['table'] == table_name
    assert shown['kw']['engine'] == db.keywords.get('kw').engine in ('native', 'bm25')


@sqlite
def test_a_model_runs_over_a_plain_find_only(served):
    db, coll, url = served
    select = coll.match(PART, 'kw').find().to_dict()
    answer = httpx.post(
        f'{url}/models/shortest/predict_query',
        json={'key': 'body', 'select': select},
        headers={'Authorization': f'Bearer {TOKEN}'},
    )
    status, _, message = error_of(answer)
    assert status == 400 and '"match"' in message


# ----- the CLI ----------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def searchable(tmp_path_factory) -> tuple[Any, dict[str, str], str]:
    """``(folder, env, uri)``: a SQLite database file with TEXTS indexed in table ``docs``."""
    folder = tmp_path_factory.mktemp('search')
    uri = f'sqlite:///{folder}/search.sqlite'
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{folder}/artifacts'}
    from superduperdb.base.config import CFG

    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        indexed(db, 'docs')
        db.close()
    return folder, env, uri


def search_cli(searchable: tuple[Any, dict[str, str], str], *args: str) -> Any:
    folder, env, uri = searchable
    import os

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests.helpers unpickles
    env = {**env, 'PYTHONPATH': os.pathsep.join([here, os.environ.get('PYTHONPATH', '')])}
    return run_cli_80_columns('search', 'docs', '--uri', uri, *args, cwd=folder, env=env)


def test_cli_search_prints_hybrid_results_best_first(searchable):
    done = search_cli(searchable, '--text', PART['body'], '--field', 'body', '--like', 'vec', '--match', 'kw')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if '0x80070005' in line)
    assert first == min(i for i, line in enumerate(lines) if any(t[:20] in line for t in TEXTS))
    assert 'like 1' in lines[first] and 'match 1' in lines[first]
    assert 'ms' in done.stdout  # the timings

    as_json = search_cli(
        searchable,
        '--text',
        'paper',
        '--field',
        'body',
        '--match',
        'kw',
        '--n',
        '2',
        '--json',
        '--filter',
        '{"n": {"$gte": 3}}',
    )
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert [d['body'] for d in result['documents']] == ['paper jam in tray two']
    assert 'match_ms' in result['timings']


def test_cli_search_reranks_and_fuses_by_weight(searchable):
    done = search_cli(
        searchable,
        '--text',
        PART['body'],
        '--field',
        'body',
        '--like',
        'vec',
        '--match',
        'kw',
        '--fuse',
        'weighted',
        '--rerank',
        'shortest',
        '--json',
    )
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)['documents']
    lengths = [len(d['body']) for d in docs]
    assert lengths == sorted(lengths) and all('rerank' in d['_scores'] for d in docs)


def test_cli_search_through_a_server_prints_what_the_database_gives(searchable):
    from superduperdb.base.config import CFG

    folder, env, uri = searchable
    args = ('--text', PART['body'], '--field', 'body', '--like', 'vec', '--match', 'kw', '--json')
    local = search_cli(searchable, *args)
    assert local.returncode == 0, local.stderr
    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        try:
            with running(create_app(db, token=TOKEN, read_token=READ)) as url:
                remote = run_cli_80_columns(
                    'search',
                    'docs',
                    '--uri',
                    url,
                    *args,
                    cwd=folder,
                    env={'SUPERDUPERDB_SERVER__TOKEN': READ},
                )
        finally:
            db.close()
    assert remote.returncode == 0, remote.stderr
    documents = [json.loads(done.stdout)['documents'] for done in (local, remote)]
    assert [found(docs) for docs in documents] == [found(documents[0])] * 2
    assert documents[1][0]['body'] == 'error 0x80070005 access denied'
    assert 'like_ms' in json.loads(remote.stdout)['timings']  # the server's, carried back


@pytest.mark.parametrize(
    ('args', 'says'),
    [
        (('--text', 'x', '--field', 'body', '--match', 'nope'), "keyword index 'nope'"),
        (('--text', 'x', '--field', 'body'), '--like'),
        (('--text', 'x', '--field', 'body', '--match', 'kw', '--fuse', 'rrf'), '--like'),
        (('--text', 'x', '--field', 'body', '--match', 'kw', '--filter', '{n: 1'), '--filter'),
        (('--text', 'x', '--field', 'body', '--match', 'kw', '--rerank', 'gone'), "'gone'"),
    ],
)
def test_cli_search_errors_are_one_line(searchable, args, says):
    done = search_cli(searchable, *args)
    assert done.returncode != 0
    assert done.stderr.startswith('Error: ') and says in done.stderr, done.stderr
    assert 'Traceback' not in done.stderr
