"""Keyword indexes, match(), fusion with like() and reranking, on every backend.

The engine is each database's own full-text engine where it has one (PostgreSQL tsvector + GIN,
SQLite FTS5, MariaDB FULLTEXT) and BM25 in each process elsewhere (DuckDB, whose ``fts``
extension cannot be installed offline; MongoDB on mongomock; a lake). The vector side is an
embedder of hashed words that drops every word holding a digit: it stands in for what most
embedders do to part numbers and error codes (they blur them into their neighbours), which is
what keyword search is for. It is deterministic, so the rankings asserted are exact.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from superduperdb import Collection, KeywordIndex, VectorIndex, Watcher
from superduperdb.base.exceptions import ComponentError, ComponentNotFound, QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from superduperdb.query.search import Fuse
from superduperdb.vector_search.hybrid import fused
from tests.conftest import _open
from tests.helpers import engine_uri, hashed_words

DIMENSIONS = 64
NATIVE = {'sqlite': 'sqlite fts5', 'postgres': 'postgresql tsvector (GIN)', 'mysql': 'mariadb fulltext'}

DOCS = [
    'Error 0x80070005 means access is denied when the installer writes to the program folder',
    'Access denied errors appear when a user lacks permission to write a file',
    'The disk is full: free some space before the update can be installed',
    'Replacement filter cartridge FC-2231 fits the kitchen water purifier',
    'Replacement filter cartridge FC-3122 fits the shower water purifier',
    'The printer reports a paper jam in the second tray',
    'Permission problems when saving documents to a network share',
    'Install the update again after a restart if it fails the first time',
    'Replacement filter cartridge FC-1322 fits the kitchen water purifier',
]


def without_numbers(texts: list[str]) -> list[np.ndarray]:
    """Hashed words, minus every word with a digit (see the module's docstring)."""
    return hashed_words([re.sub(r'\S*\d\S*', ' ', t) for t in texts], DIMENSIONS)


def embedder() -> FunctionModel:
    return FunctionModel('blur', object=without_numbers, batched=True, encoder=array('float32', DIMENSIONS))


def backend_of(db) -> str:
    name = db.databackend.name
    return {'postgresql': 'postgres'}.get(name, name)


@pytest.fixture
def docs(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'body': text, 'even': i % 2 == 0} for i, text in enumerate(DOCS)]))
    return db, coll


@pytest.fixture
def indexed(docs):
    db, coll = docs
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    return db, coll


@pytest.fixture
def hybrid(indexed):
    db, coll = indexed
    db.add(VectorIndex('vec', indexing_watcher=Watcher(model=embedder(), key='body', select=coll.find())))
    return db, coll


def numbers(cursor) -> list[int]:
    return [d['n'] for d in cursor]


def test_match_ranks_the_rows_holding_the_words_first_in_the_databases_own_engine(indexed):
    db, coll = indexed
    kw = db.load('keyword_index', 'kw')
    expected_engine = 'native' if backend_of(db) in NATIVE else 'bm25'
    assert kw.engine == expected_engine
    found = list(db.execute(coll.match({'body': 'error 0x80070005'}, 'kw', n=3)))
    assert found[0]['n'] == 0
    assert '_outputs' not in found[0]  # the index's copy of the text is not read back with the row
    assert '_outputs' not in db.execute(coll.find_one({'n': 0}))
    assert all(d['_score'] > 0 for d in found)
    assert [d['_score'] for d in found] == sorted((d['_score'] for d in found), reverse=True)
    # a part number finds its own cartridge, not its neighbour
    assert numbers(db.execute(coll.match({'body': 'FC-3122'}, 'kw', n=1))) == [4]
    # words nobody wrote find nothing
    assert list(db.execute(coll.match({'body': 'zebra xylophone'}, 'kw', n=5))) == []
    (row,) = db.status().keyword_indexes
    assert row['keyword_index'] == 'kw' and row['texts'] == len(DOCS)
    assert row['engine'] == NATIVE.get(backend_of(db), 'bm25')


def test_filters_apply_before_or_after_the_match(indexed):
    db, coll = indexed
    words = {'body': 'replacement filter cartridge purifier'}
    assert set(numbers(db.execute(coll.match(words, 'kw', n=2)))) == {3, 4}
    # among the matching rows: the even one, though the odd one matches as well
    assert numbers(db.execute(coll.find({'even': False}).match(words, 'kw', n=1))) == [3]
    assert numbers(db.execute(coll.find({'even': True}).match(words, 'kw', n=1))) == [4]
    # after the match: the two best, then only those that pass
    after = numbers(db.execute(coll.match(words, 'kw', n=2).find({'even': True})))
    assert after == [4]


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never edited')
def test_inserts_updates_and_deletes_show_in_the_next_match(indexed):
    db, coll = indexed
    assert 4 not in numbers(db.execute(coll.match({'body': 'toner'}, 'kw', n=5)))
    db.execute(coll.insert_one({'n': 100, 'body': 'Toner cartridge TN-9 for the office printer'}))
    assert numbers(db.execute(coll.match({'body': 'toner'}, 'kw', n=5))) == [100]
    db.execute(coll.update_one({'n': 4}, {'$set': {'body': 'Toner low warning on the shower purifier'}}))
    assert set(numbers(db.execute(coll.match({'body': 'toner'}, 'kw', n=5)))) == {100, 4}
    # the old words are gone with the old text
    assert 4 not in numbers(db.execute(coll.match({'body': 'FC-3122'}, 'kw', n=5)))
    db.execute(coll.delete_many({'n': 100}))
    assert numbers(db.execute(coll.match({'body': 'toner'}, 'kw', n=5))) == [4]
    (row,) = db.status().keyword_indexes
    assert row['texts'] == len(DOCS)
    assert row.get('drift', 0) == 0 and row.get('missing', 0) == 0 and row.get('extra', 0) == 0


@pytest.mark.parametrize('part, row', [('FC-1322', 8), ('FC-3122', 4), ('FC-2231', 3)])
def test_hybrid_finds_a_part_number_first_where_vectors_alone_do_not(hybrid, part, row):
    db, coll = hybrid
    query = {'body': part}
    vector_only = list(db.execute(coll.like(query, 'vec', n=3)))
    assert {d['_score'] for d in vector_only} == {0.0}  # the embedder sees nothing in a part number
    found = list(db.execute(coll.like(query, 'vec', n=5).match(query, 'kw', n=5).find()))
    assert found[0]['n'] == row
    assert found[0]['_ranks']['match'] == 1 and found[0]['_scores']['match'] > 0
    assert set(found[0]['_scores']) == {'like', 'match', 'fused'}
    # with words around it: the vectors tie the two kitchen cartridges, the words tell them apart
    words = {'body': f'replacement cartridge for the water purifier {part}'}
    vector_only = list(db.execute(coll.like(words, 'vec', n=3)))
    assert {d['n'] for d in vector_only} == {3, 4, 8}
    assert len({round(d['_score'], 6) for d in vector_only}) == 1
    found = list(db.execute(coll.like(words, 'vec', n=5).match(words, 'kw', n=5).find()))
    assert found[0]['n'] == row


def test_reciprocal_rank_fusion_orders_rows_by_the_sum_over_parts(hybrid):
    db, coll = hybrid
    query = {'body': 'access denied when writing a file'}
    parts = {
        'like': list(db.execute(coll.like(query, 'vec', n=6))),
        'match': list(db.execute(coll.match(query, 'kw', n=6))),
    }
    cursor = db.execute(coll.like(query, 'vec', n=6).match(query, 'kw', n=6).find())
    found = list(cursor)
    expected: dict[int, float] = {}
    ranks: dict[str, dict[int, int]] = {}
    for part, docs in parts.items():  # rank: 1 + how many scored strictly better
        scores = [round(d['_score'], 6) for d in docs]
        ranks[part] = {d['n']: 1 + sum(s > score for s in scores) for d, score in zip(docs, scores)}
        for n, rank in ranks[part].items():
            expected[n] = expected.get(n, 0.0) + 1 / (60 + rank)
    best = sorted(expected.values(), reverse=True)[:6]
    assert [d['_score'] for d in found] == pytest.approx(best)
    for d in found:
        assert d['_score'] == pytest.approx(expected[d['n']])
        assert d['_ranks'] == {part: ranks[part].get(d['n']) for part in parts}
    assert {'like_ms', 'match_ms', 'fuse_ms', 'rows_ms'} <= set(cursor.timings)


def test_weighted_fusion_follows_the_weights(hybrid):
    db, coll = hybrid
    query = {'body': 'error 0x80070005 permission'}
    both = coll.like(query, 'vec', n=8).match(query, 'kw', n=8).find()
    only_words = list(db.execute(both.fuse('weighted', weights={'like': 0, 'match': 1}, n=3)))
    only_vectors = list(db.execute(both.fuse('weighted', weights={'like': 1, 'match': 0}, n=3)))
    best_words = max(d['_score'] for d in db.execute(coll.match(query, 'kw', n=8)))
    best_vector = max(d['_score'] for d in db.execute(coll.like(query, 'vec', n=8)))
    assert only_words[0]['_scores']['match'] == pytest.approx(best_words)  # (ties: any of the best)
    assert only_vectors[0]['_scores']['like'] == pytest.approx(best_vector)
    assert only_words[0]['_score'] == only_vectors[0]['_score'] == 1.0
    found = list(db.execute(both.fuse('weighted', weights={'like': 0.5, 'match': 0.5}, n=4)))
    assert len(found) == 4 and all(0 <= d['_score'] <= 1 for d in found)


def test_a_fused_search_filters_like_a_like(hybrid):
    db, coll = hybrid
    query = {'body': 'replacement filter cartridge FC-2231'}
    among = numbers(db.execute(coll.find({'even': True}).like(query, 'vec', n=2).match(query, 'kw', n=2)))
    assert among and all(n % 2 == 0 for n in among) and among[0] == 4
    after = numbers(db.execute(coll.like(query, 'vec', n=2).match(query, 'kw', n=2).find({'even': False})))
    assert after[0] == 3 and all(n % 2 == 1 for n in after)


def test_a_reranker_reorders_the_top_candidates(hybrid):
    db, coll = hybrid
    query = {'body': 'replacement filter cartridge purifier'}
    shortest_first = lambda q, row: -len(row['body'])  # noqa: E731
    plain = list(db.execute(coll.match(query, 'kw', n=4)))
    reranked = db.execute(coll.match(query, 'kw', n=4).rerank(shortest_first, top=2))
    found = list(reranked)
    head = sorted(plain[:2], key=lambda d: len(d['body']))
    assert [d['n'] for d in found[:2]] == [d['n'] for d in head]
    assert [d['n'] for d in found[2:]] == [d['n'] for d in plain[2:]]  # beyond top: as they were
    assert found[0]['_scores']['rerank'] == -len(head[0]['body'])
    assert 'rerank_ms' in reranked.timings
    # a stored model scoring (query, text) pairs reranks the same way, named by its identifier
    words_shared = FunctionModel(
        'overlap', object=lambda q, text: len(set(q.lower().split()) & set(text.lower().split()))
    )
    db.add(words_shared)
    best = list(
        db.execute(coll.like(query, 'vec', n=8).match(query, 'kw', n=8).rerank('overlap', top=8, n=2))
    )
    overlaps = [len(set(query['body'].split()) & set(d['body'].lower().split())) for d in best]
    assert len(best) == 2 and overlaps == sorted(overlaps, reverse=True)
    assert best[0]['_scores']['rerank'] == overlaps[0]


def test_bad_keyword_queries_get_clear_errors(hybrid):
    db, coll = hybrid
    with pytest.raises(ComponentNotFound, match="no keyword index 'nope'; there are: kw"):
        db.execute(coll.match({'body': 'x'}, 'nope'))
    with pytest.raises(QueryError, match="indexes 'body'; match {'body': ...}, not 'title'"):
        db.execute(coll.match({'title': 'x'}, 'kw'))
    with pytest.raises(QueryError, match='one field and its text'):
        coll.match('just words', 'kw')
    with pytest.raises(QueryError, match='positive int'):
        coll.match({'body': 'x'}, 'kw', n=0)
    with pytest.raises(QueryError, match='needs both'):
        db.execute(coll.match({'body': 'x'}, 'kw').fuse())
    with pytest.raises(QueryError, match='one of rrf, weighted'):
        coll.match({'body': 'x'}, 'kw').fuse('borda')
    with pytest.raises(QueryError, match='chain them after one'):
        db.execute(coll.find().rerank(lambda q, r: 0))
    with pytest.raises(QueryError, match='cannot be sent or stored'):
        coll.match({'body': 'x'}, 'kw').rerank(lambda q, r: 0).to_dict()
    with pytest.raises(QueryError, match='indexes table'):
        db.execute(Collection('elsewhere').match({'body': 'x'}, 'kw'))


def test_bad_keyword_indexes_are_refused_before_anything_is_stored(docs):
    db, coll = docs
    with pytest.raises(ComponentError, match='key= names the text field'):
        KeywordIndex('kw', select=coll.find())
    with pytest.raises(ComponentError, match='select= takes the query'):
        KeywordIndex('kw', key='body')
    with pytest.raises(ComponentError, match='engine= is one of native, bm25'):
        KeywordIndex('kw', key='body', select=coll.find(), engine='lucene')
    with pytest.raises(ComponentError, match='language= names a language'):
        KeywordIndex('kw', key='body', select=coll.find(), language="english'; drop table x; --")
    if backend_of(db) not in NATIVE:
        with pytest.raises(ComponentError, match="engine='bm25'"):
            db.add(KeywordIndex('kw', key='body', select=coll.find(), engine='native'))
        assert db.show('keyword_index') == []


@pytest.mark.postgres
def test_postgres_stems_by_the_language_and_refuses_one_it_does_not_know(postgres_db, table_name):
    db = postgres_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'body': 'The runners were running'}, {'body': 'Nothing here'}]))
    db.add(KeywordIndex('en', key='body', select=coll.find(), language='english'))
    assert len(list(db.execute(coll.match({'body': 'run'}, 'en')))) == 1  # stemmed
    db.add(KeywordIndex('plain', key='body', select=coll.find(), language='simple'))
    assert list(db.execute(coll.match({'body': 'run'}, 'plain'))) == []  # not stemmed
    with pytest.raises(ComponentError, match='no text search configuration .klingon.'):
        db.add(KeywordIndex('tlh', key='body', select=coll.find(), language='klingon'))
    assert sorted(db.show('keyword_index')) == ['en', 'plain']


@pytest.fixture
def postgres_db(tmp_path):
    yield from _open('postgres', tmp_path)


@pytest.fixture
def sqlite_db(tmp_path):
    yield from _open('sqlite', tmp_path)


@pytest.fixture
def duckdb_db(tmp_path):
    yield from _open('duckdb', tmp_path)


@pytest.mark.sqlite
def test_a_broken_sqlite_index_is_found_by_its_check_and_rebuilt(sqlite_db, table_name):
    db = sqlite_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'body': text} for text in DOCS]))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    out = db.keywords.output_of(db.keywords.get('kw'))
    with db.databackend.engine.begin() as conn:  # another program empties the FTS index
        conn.exec_driver_sql(f'INSERT INTO "{out}__fts"("{out}__fts") VALUES (\'delete-all\')')
    assert list(db.execute(coll.match({'body': 'printer'}, 'kw'))) == []
    (row,) = db.status().keyword_indexes
    assert row['drift'] == 1 and row['repaired'] == 1
    assert len(list(db.execute(coll.match({'body': 'printer'}, 'kw')))) == 1
    (row,) = db.status().keyword_indexes
    assert row['drift'] == 0


@pytest.mark.duckdb
def test_a_bm25_engine_catches_up_with_another_process_and_repairs_drift(duckdb_db, table_name):
    """DuckDB has no full-text engine here: each process has its BM25 engine, which applies the
    writes another process made before its next search, and its check repairs what it lost."""
    db = duckdb_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'body': text} for i, text in enumerate(DOCS)]))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    other = type(db)(db.databackend, db.metadata, db.artifact_store)  # as a server would have
    assert numbers(other.execute(coll.match({'body': 'printer'}, 'kw'))) == [5]
    db.execute(coll.insert_one({'n': 50, 'body': 'A second printer on the third floor'}))
    db.execute(coll.delete_many({'n': 5}))
    assert numbers(other.execute(coll.match({'body': 'printer'}, 'kw'))) == [50]
    held = other.keywords._held['kw']  # an update this engine never got (a process killed mid-way)
    key = str(db.execute(coll.find_one({'n': 50}))['_id'])
    held.engine.delete([key])
    del held.held[key]
    report = other.keywords.verify(other.keywords.get('kw'))
    assert report['missing'] == 1 and report['repaired'] == 1
    assert numbers(other.execute(coll.match({'body': 'printer'}, 'kw'))) == [50]


@pytest.mark.postgres
def test_another_process_writes_and_this_one_matches_at_once(postgres_db, table_name):
    db = postgres_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'body': text} for i, text in enumerate(DOCS)]))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    script = textwrap.dedent(
        f"""
        from superduperdb import superduper, Collection
        db = superduper({engine_uri(db)!r})
        db.execute(Collection({table_name!r}).insert_one({{'n': 77, 'body': 'Fax machine out of toner'}}))
        """
    )
    subprocess.run([sys.executable, '-c', script], check=True, timeout=120)
    assert numbers(db.execute(coll.match({'body': 'fax toner'}, 'kw'))) == [77]


def test_fused_like_a_formula():
    """The fusion itself, on plain rankings: RRF ties keep the order first seen; weighted scales."""
    order, scores, ranks = fused({'like': [1, 2, 3], 'match': [3, 4]}, {'like': {}, 'match': {}}, Fuse())
    assert order == [3, 1, 2, 4]
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert ranks[4] == {'like': None, 'match': 2}
    weighted = Fuse('weighted', weights=(('like', 1.0), ('match', 3.0)))
    order, scores, _ = fused(
        {'like': [1, 2], 'match': [2, 1]}, {'like': {1: 0.9, 2: 0.1}, 'match': {2: 5.0, 1: 1.0}}, weighted
    )
    assert order == [2, 1] and scores[2] == pytest.approx(3.0) and scores[1] == pytest.approx(1.0)


def test_a_keyword_index_over_chunks_answers_with_rows_and_their_matching_chunks(db, table_name):
    from superduperdb.models.chunkers import SentenceChunker

    coll = Collection(table_name)
    long_manual = ' '.join(DOCS)  # one row whose sentences are the documents above
    db.execute(
        coll.insert_many([{'title': 'manual', 'body': long_manual}, {'title': 'other', 'body': DOCS[5]}])
    )
    db.add(Watcher(model=SentenceChunker('sentences', max_chars=120), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'sentences')
    db.add(KeywordIndex('chunk-kw', key='text', select=chunks.find()))
    db.add(
        VectorIndex('chunk-vec', indexing_watcher=Watcher(model=embedder(), key='text', select=chunks.find()))
    )
    found = list(db.execute(coll.match({'body': 'FC-3122'}, 'chunk-kw', n=2)))
    assert [d['title'] for d in found] == ['manual']
    assert 'FC-3122' in found[0]['_chunks'][0]['text']
    words = {'text': 'paper jam printer'}  # the chunks' field (the rows' own, 'body', for match too)
    both = list(db.execute(coll.like(words, 'chunk-vec', n=2).match(words, 'chunk-kw', n=2).find()))
    assert {d['title'] for d in both} == {'manual', 'other'}
    assert all(d['_chunks'] and d['_ranks']['match'] is not None for d in both)
    with pytest.raises(QueryError, match="indexes the chunks of 'body'"):
        db.execute(coll.match({'title': 'x'}, 'chunk-kw'))


def test_removing_a_keyword_index_removes_its_full_text_index_and_its_text_copy(indexed):
    db, coll = indexed
    index = db.keywords.get('kw')
    out = db.keywords.output_of(index)
    watcher = index.indexing_watcher.identifier
    assert watcher in db.show('watcher')
    db.remove('keyword_index', 'kw')
    assert db.show('keyword_index') == [] and watcher not in db.show('watcher')
    with pytest.raises(ComponentNotFound, match="no keyword index 'kw'"):
        db.execute(coll.match({'body': 'printer'}, 'kw'))
    db.execute(coll.insert_one({'n': 9, 'body': 'a new printer'}))  # no copy made any more
    if db.databackend.name == 'sqlite':
        with db.databackend.engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql('SELECT name FROM sqlite_master')}
        assert not any(n.startswith(f'{out}__fts') for n in names)
    # added again: built again over the texts, the new row's included
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    assert set(numbers(db.execute(coll.match({'body': 'printer'}, 'kw', n=5)))) == {5, 9}


@pytest.mark.parametrize('backend', ['sqlite', 'duckdb', 'postgres', 'mysql', 'mongodb'], indirect=True)
def test_writes_by_another_program_reach_the_keyword_index_through_change_capture(db, app, table_name):
    coll = Collection(table_name)
    pk = '_id' if db.databackend.name == 'mongodb' else 'id'

    def write(statement: str, rows: list[tuple[int, str]] = ()) -> None:
        if db.databackend.name != 'mongodb':
            app.sql(statement)
        elif statement.startswith('INSERT'):
            app.coll.insert_many([{'_id': i, 'body': body} for i, body in rows])
        elif statement.startswith('UPDATE'):
            app.coll.update_one({'_id': rows[0][0]}, {'$set': {'body': rows[0][1]}})
        else:
            app.coll.delete_one({'_id': rows[0][0]})

    if db.databackend.name != 'mongodb':
        app.sql('CREATE TABLE {t} (id INTEGER PRIMARY KEY, body TEXT)')
    write(
        "INSERT INTO {t} (id, body) VALUES (1, 'printer out of paper'), (2, 'disk full')",
        [(1, 'printer out of paper'), (2, 'disk full')],
    )
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    db.cdc.poll_once()  # starts following the table

    def found(words: str) -> list[int]:
        return [d[pk] for d in db.execute(coll.match({'body': words}, 'kw', n=5))]

    assert found('printer') == [1]
    write("INSERT INTO {t} (id, body) VALUES (3, 'fax machine jammed')", [(3, 'fax machine jammed')])
    write("UPDATE {t} SET body = 'printer repaired' WHERE id = 1", [(1, 'printer repaired')])
    write('DELETE FROM {t} WHERE id = 2', [(2, '')])
    assert found('fax') == []  # not yet captured
    db.cdc.poll_once()
    assert found('fax') == [3] and found('paper') == [] and found('repaired') == [1] and found('disk') == []
    (row,) = db.status().keyword_indexes
    assert row['texts'] == 2


@pytest.mark.sqlite
def test_a_stored_cross_encoder_reranks_by_its_scores_in_any_process(sqlite_db, table_name):
    """superduper(CrossEncoder(...)) stored and named in rerank(). No trained cross-encoder can be
    downloaded here: this one is MiniLM's encoder with a new scoring head (untrained), so the
    test asserts the wiring (the order follows the model's own scores, in this process and in
    another one that loads it from the database), not relevance; MiniLM as a bi-encoder
    reranker is measured in docs/hybrid.md."""
    from sentence_transformers import CrossEncoder

    from superduperdb import superduper
    from tests.helpers import minilm_path

    db = sqlite_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'body': text} for i, text in enumerate(DOCS)]))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    cross = CrossEncoder(minilm_path(), num_labels=1, local_files_only=True, device='cpu')
    model = db.add(superduper(cross, identifier='cross'))
    assert type(model).__name__ == 'CrossEncoderModel'
    query = {'body': 'replacement filter cartridge water purifier'}
    candidates = list(db.execute(coll.match(query, 'kw', n=4)))
    scores = cross.predict([(query['body'], d['body']) for d in candidates])
    expected = [candidates[i]['n'] for i in np.argsort(-np.asarray(scores), kind='stable')]
    found = db.execute(coll.match(query, 'kw', n=4).rerank('cross', top=4))
    docs = list(found)
    assert [d['n'] for d in docs] == expected
    assert [d['_scores']['rerank'] for d in docs] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    other = type(db)(db.databackend, db.metadata, db.artifact_store)  # loads it from the database
    again = list(other.execute(coll.match(query, 'kw', n=4).rerank('cross', top=4)))
    assert [d['n'] for d in again] == expected
    with pytest.raises(QueryError, match='pairs of strings'):
        model.predict(['just a text'])
