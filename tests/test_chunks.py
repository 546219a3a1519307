"""Chunks on every backend: one row becomes many vectors, and only what changed is embedded again.

The texts are Python's own documentation as it ships (the docstrings of standard modules), the
embedder a deterministic bag of hashed words (counted as it runs: the test asserts what was
computed, not only what was stored), and the chunker a real one (models/chunkers.py).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xxhash

from superduperdb import CFG, Collection, VectorIndex, Watcher
from superduperdb.backends.sql.views import output_views
from superduperdb.base.exceptions import QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.chunkers import FunctionChunker, MarkdownChunker, SentenceChunker
from superduperdb.models.function import FunctionModel
from superduperdb.store.chunks import chunk_ids
from superduperdb.store.outputs import output_table
from tests.helpers import engine_uri, hashed_words, quote, raw, wait_for

DIMENSIONS = 64
#: every text the embedder was given, in order (the local executor runs jobs in this process)
EMBEDDED: list[str] = []


def bag_of_words(texts: list[str]) -> list[np.ndarray]:
    EMBEDDED.extend(texts)
    return hashed_words(texts, DIMENSIONS)


def embedder() -> FunctionModel:
    return FunctionModel('bow', object=bag_of_words, batched=True, encoder=array('float32', DIMENSIONS))


def long_text() -> str:
    """About 20 kB of prose: the docstrings of a few standard modules, as sections."""
    import argparse
    import collections
    import json
    import logging
    import textwrap

    parts = [
        f'# {m.__name__}\n\n{m.__doc__.strip()}' for m in (json, argparse, collections, logging, textwrap)
    ]
    return '\n\n'.join(parts)


SPLITTER = dict(max_chars=600)


def chunked(db, table: str, *, n_extra: int = 2):
    """``table`` with one long document and ``n_extra`` short ones, chunked and indexed."""
    coll = Collection(table)
    rows = [{'title': 'modules', 'lang': 'en', 'body': long_text()}]
    rows += [
        {'title': f'note {i}', 'lang': 'de', 'body': f'Kurze Notiz {i} über Zeitzonen.'}
        for i in range(n_extra)
    ]
    db.execute(coll.insert_many(rows))
    return coll, index_chunks(db, coll)


def index_chunks(db, coll: Collection) -> Collection:
    """The chunks of ``coll``'s ``body`` (by Markdown section), embedded and indexed."""
    db.add(Watcher(model=MarkdownChunker('splitter', **SPLITTER), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'splitter')
    index = Watcher(model=embedder(), key='text', select=chunks.find())
    db.add(VectorIndex('chunk-index', indexing_watcher=index))
    return chunks


def stored_chunks(db, chunks) -> dict:
    """``{parent (as text): [(chunk, text, start, end), ...] in order}`` as the chunk table holds them."""
    found: dict = {}
    for row in db.execute(chunks.find()):
        found.setdefault(str(row['parent']), []).append((row['chunk'], row['text'], row['start'], row['end']))
    return {parent: sorted(rows) for parent, rows in found.items()}


def expected_chunks(db, coll) -> dict:
    """What the chunker makes of each row's text now (the truth the chunk table must match)."""
    splitter = MarkdownChunker('splitter', **SPLITTER)
    found = {}
    pk = db.databackend.primary_key(coll.name)
    for row in db.execute(coll.find()):
        pieces = splitter.chunk(row['body'])
        found[str(row[pk])] = [(i, c['text'], c['start'], c['end']) for i, c in enumerate(pieces)]
    return {parent: rows for parent, rows in found.items() if rows}


@pytest.fixture(autouse=True)
def _count():
    EMBEDDED.clear()
    yield


def test_a_row_becomes_chunks_each_embedded_once_and_searched_as_its_row(db, table_name):
    coll, chunks = chunked(db, table_name)
    truth = expected_chunks(db, coll)
    assert stored_chunks(db, chunks) == truth
    total = sum(len(rows) for rows in truth.values())
    assert total > 20 and sorted(EMBEDDED) == sorted(
        text for rows in truth.values() for _, text, _, _ in rows
    )
    body = db.execute(coll.find_one({'title': 'modules'}))['body']
    for row in db.execute(chunks.find()):  # offsets into the row's text, exactly
        if row['text'] in body:
            assert body[row['start'] : row['end']] == row['text']

    # search by meaning over chunks, answered with rows: each once, best first, n counting rows
    found = list(db.execute(coll.like({'text': 'JSON encoder decoder serialization'}, 'chunk-index', n=2)))
    assert [d['title'] for d in found][0] == 'modules' and len({str(d['_id']) for d in found}) == len(found)
    best = found[0]
    assert best['_chunks'] and best['_score'] == best['_chunks'][0]['_score']
    assert [c['_score'] for c in best['_chunks']] == sorted(
        (c['_score'] for c in best['_chunks']), reverse=True
    )
    top = best['_chunks'][0]
    assert 'json' in top['text'].lower() and best['body'][top['start'] : top['end']] == top['text']

    # chunks=True: the chunks themselves, n of them, each naming its row
    pieces = list(db.execute(coll.like({'text': 'JSON encoder decoder'}, 'chunk-index', n=3, chunks=True)))
    assert len(pieces) == 3 and all(str(p['parent']) == str(best['_id']) for p in pieces[:1])
    assert [p['_score'] for p in pieces] == sorted((p['_score'] for p in pieces), reverse=True)

    # filters on the rows' columns: before the search, and after it
    german = list(db.execute(coll.find({'lang': 'de'}).like({'text': 'JSON'}, 'chunk-index', n=5)))
    assert {d['title'] for d in german} == {'note 0', 'note 1'}
    after = list(db.execute(coll.like({'text': 'Zeitzonen Notiz'}, 'chunk-index', n=5).find({'lang': 'de'})))
    assert after and {d['lang'] for d in after} == {'de'}


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never edited')
def test_editing_the_middle_of_a_long_text_embeds_only_the_chunks_whose_text_changed(db, table_name):
    coll, chunks = chunked(db, table_name)
    before = expected_chunks(db, coll)
    row = db.execute(coll.find_one({'title': 'modules'}))
    old = 'collections'  # a word of the middle section only, changed in one paragraph
    start = row['body'].index('# collections')
    edited = row['body'][:start] + row['body'][start:].replace(old, 'containers', 1)
    edited = edited.replace('# logging', '# logging\n\nA new paragraph about timezones and clocks.', 1)
    EMBEDDED.clear()
    db.execute(coll.update_one({'_id': row['_id']}, {'$set': {'body': edited}}))

    after = expected_chunks(db, coll)
    assert stored_chunks(db, chunks) == after  # exactly the chunker's output for the new text
    old_texts = {text for rows in before.values() for _, text, _, _ in rows}
    new_texts = [text for rows in after.values() for _, text, _, _ in rows if text not in old_texts]
    assert 1 <= len(new_texts) <= 4
    assert sorted(EMBEDDED) == sorted(new_texts)  # nothing else was embedded again
    moved = [r for r in after[str(row['_id'])] if r[1] in old_texts and r not in before[str(row['_id'])]]
    assert moved  # chunks after the edit kept their text and moved: kept, not embedded again

    # no chunk of the old text is ever returned; the new text is found
    gone = [
        text
        for rows in before.values()
        for _, text, _, _ in rows
        if text not in {t for rs in after.values() for _, t, _, _ in rs}
    ]
    pieces = list(db.execute(coll.like({'text': gone[0]}, 'chunk-index', n=50, chunks=True)))
    assert all(p['text'] in {t for rs in after.values() for _, t, _, _ in rs} for p in pieces)
    hit = list(db.execute(coll.like({'text': 'timezones and clocks'}, 'chunk-index', n=1, chunks=True)))
    assert 'timezones and clocks' in hit[0]['text']


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never deleted')
def test_a_deleted_row_takes_its_chunks_and_their_vectors_with_it(db, table_name):
    coll, chunks = chunked(db, table_name)
    row = db.execute(coll.find_one({'title': 'modules'}))
    n_chunks = len(expected_chunks(db, coll)[str(row['_id'])])
    before = db.execute(chunks.count())
    db.execute(coll.delete_one({'_id': row['_id']}))
    assert db.execute(chunks.count()) == before - n_chunks
    assert db.execute(chunks.count({'parent': row['_id']})) == 0
    found = list(db.execute(coll.like({'text': 'JSON encoder decoder'}, 'chunk-index', n=10)))
    assert str(row['_id']) not in {str(d['_id']) for d in found} and len(found) == 2
    pieces = list(db.execute(coll.like({'text': 'JSON encoder decoder'}, 'chunk-index', n=10, chunks=True)))
    assert all(str(p['parent']) != str(row['_id']) for p in pieces)
    status = {s['watcher']: s for s in db.status()}
    embedder_status = status[f'bow@{chunks.name}.text']
    assert embedder_status['rows'] == embedder_status['current'] == before - n_chunks


def picky(text: str) -> list[str]:
    """A chunking function that fails on some texts (as a user's own may)."""
    if 'boom' in text:
        raise ValueError('cannot split a text that says boom')
    return text.split('. ')


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never edited')
def test_a_row_the_chunker_fails_on_keeps_no_chunks_and_is_in_the_ledger(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': 1, 'body': 'One sentence. Another one'}, {'n': 2, 'body': 'A. B'}]))
    db.add(Watcher(model=FunctionChunker('picky', object=picky), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'picky')
    assert db.execute(chunks.count()) == 4
    db.execute(coll.update_one({'n': 2}, {'$set': {'body': 'A boom. B'}}))  # its old chunks must go
    assert sorted(r['text'] for r in db.execute(chunks.find())) == ['Another one', 'One sentence']
    failures = db.metadata.failures(db.outputs.register(table_name, 'body', 'picky'))
    assert len(failures) == 1 and failures[0]['error'] == 'ValueError' and 'boom' in str(failures[0])


def test_chunks_of_a_query_name_their_chunker():
    with pytest.raises(QueryError, match='chunker, or its identifier'):
        Collection('docs').chunks('body', 3)
    with pytest.raises(QueryError, match='chunked field'):
        Collection('docs').chunks('', 'splitter')
    assert Collection('docs').chunks('body', MarkdownChunker('md')).name == 'docs__body__md__chunks'
    assert chunk_ids(1, ['a', 'a'])[1].endswith('#2')


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never deleted')
def test_status_counts_rows_and_chunks_and_reports_chunks_left_by_a_deleted_row(db, table_name):
    coll, chunks = chunked(db, table_name)
    n = db.execute(chunks.count())
    status = {s['watcher']: s for s in db.status()}
    rows = status[f'splitter@{table_name}.body']
    assert (rows['rows'], rows['current'], rows['chunks'], rows['orphaned'], rows['failed_chunks']) == (
        3,
        3,
        n,
        0,
        0,
    )
    assert rows['chunk_table'] == chunks.name
    embedded = status[f'bow@{chunks.name}.text']
    assert (embedded['rows'], embedded['current'], embedded['stale'], embedded['failed']) == (n, n, 0, 0)
    # a row deleted behind superduperdb's back, its clean-up never run: its chunks are orphaned
    row = db.execute(coll.find_one({'title': 'note 0'}))
    db.databackend.delete(table_name, {'_id': row['_id']}, many=False)
    rows = {s['watcher']: s for s in db.status()}[f'splitter@{table_name}.body']
    assert (rows['rows'], rows['chunks'], rows['orphaned']) == (2, n, 1)
    db.cdc.poll_once()  # the reconcile of change capture removes them, with their vectors
    rows = {s['watcher']: s for s in db.status()}[f'splitter@{table_name}.body']
    assert (rows['chunks'], rows['orphaned']) == (n - 1, 0)
    found = db.execute(coll.like({'text': 'Kurze Notiz 0 über Zeitzonen'}, 'chunk-index', n=5, chunks=True))
    assert all(str(p['parent']) != str(row['_id']) for p in found)
    # a row's text changed behind superduperdb's back: its chunks are stale until the reconcile
    note = db.execute(coll.find_one({'title': 'note 1'}))
    db.databackend.update(table_name, {'_id': note['_id']}, {'$set': {'body': 'Neue Notiz.'}}, many=False)
    rows = {s['watcher']: s for s in db.status()}[f'splitter@{table_name}.body']
    assert (rows['rows'], rows['current'], rows['stale']) == (2, 1, 1)
    db.cdc.poll_once()
    status = {s['watcher']: s for s in db.status()}
    rows, embedded = status[f'splitter@{table_name}.body'], status[f'bow@{chunks.name}.text']
    assert (rows['current'], rows['stale'], rows['chunks'], rows['orphaned']) == (2, 0, n - 1, 0)
    assert (embedded['rows'], embedded['current'], embedded['stale']) == (n - 1, n - 1, 0)
    (hit,) = db.execute(coll.like({'text': 'Neue Notiz.'}, 'chunk-index', n=1, chunks=True))
    assert hit['text'] == 'Neue Notiz.'


# ----- several processes, and a process killed -----------------------------------------------------
SERVERS_AND_FILES = [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mysql')]
ROOT = Path(__file__).resolve().parents[1]


def slow_bag_of_words(texts: list[str]) -> list[np.ndarray]:
    """The embedder, 20 ms a batch slower: a backfill long enough to be killed in the middle."""
    time.sleep(0.02)
    return bag_of_words(texts)


def _child(code: str, uri: str, artifacts: str) -> subprocess.Popen:
    # the models of this module are stored by reference: the child imports it as pytest did
    path = os.pathsep.join([str(ROOT), str(ROOT / 'tests')])
    env = {**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': artifacts, 'PYTHONPATH': path}
    # a child stuck for 100 s prints where it is and exits (the parent waits 120 s)
    script = f'import faulthandler; faulthandler.dump_traceback_later(100, exit=True); uri = {uri!r}\n'
    script += textwrap.dedent(code)
    return subprocess.Popen([sys.executable, '-c', script], cwd=ROOT, env=env, stderr=subprocess.PIPE)


def _documents(n: int) -> list[dict]:
    text = long_text()
    return [{'title': f'doc {i}', 'body': text.replace('# json', f'# json {i}', 1)} for i in range(n)]


@pytest.mark.parametrize('backend', SERVERS_AND_FILES, indirect=True)
def test_a_backfill_killed_mid_way_resumes_without_duplicates_or_embedding_twice(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many(_documents(12)))
    chunks = coll.chunks('body', 'splitter')
    child = _child(
        f"""
        from superduperdb import Collection, VectorIndex, Watcher, superduper
        from superduperdb.encoders.numpy import array
        from superduperdb.models.chunkers import MarkdownChunker
        from superduperdb.models.function import FunctionModel
        from tests.test_chunks import DIMENSIONS, SPLITTER, slow_bag_of_words
        db = superduper(uri)
        db.chunk_size = 2  # two rows a step: many steps to be killed between
        coll = Collection({table_name!r})
        chunks = coll.chunks('body', 'splitter')
        embed = FunctionModel('bow', object=slow_bag_of_words, batched=True, batch_size=4,
                              encoder=array('float32', DIMENSIONS))
        index = Watcher(model=embed, key='text', select=chunks.find())
        db.add(VectorIndex('chunk-index', indexing_watcher=index))
        db.add(Watcher(model=MarkdownChunker('splitter', **SPLITTER), key='body', select=coll.find()))
        """,
        engine_uri(db),
        CFG.artifact_store,
    )
    try:
        wait_for(
            lambda: db.databackend.has_table(chunks.name) and db.execute(chunks.count()) > 40,
            'the child to store some chunks',
        )
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    out = db.outputs.register(chunks.name, 'text', 'bow')
    embedded_before = {r['_id'] for rows in db.databackend.find(out, {}) for r in rows}

    # a restart: the reconcile of change capture finds the killed process's jobs dead (not alive
    # on this host) and computes what they left, the chunker's rows first, then the chunks'
    counted = importlib.import_module('tests.test_chunks').EMBEDDED  # the module the model was loaded from
    counted.clear()
    time.sleep(0.5)
    with CFG.override(cluster={'heartbeat': 0.1}):  # silent for 3 heartbeats: the killed jobs failed
        db.cdc.poll_once()
        db.cdc.poll_once()  # the chunk table, reconciled after the chunks the first pass stored
    truth = expected_chunks(db, coll)
    assert stored_chunks(db, chunks) == truth  # every chunk once: none lost, none twice
    final = {cid for parent, rows in truth.items() for cid in chunk_ids(parent, [t for _, t, _, _ in rows])}
    assert {r['_id'] for r in db.execute(chunks.find({}, {'_id': 1}))} == final
    assert len(counted) == len(final - embedded_before)  # what was embedded before stays
    status = {s['watcher']: s for s in db.status()}[f'bow@{chunks.name}.text']
    assert status['rows'] == status['current'] == len(final)
    list(db.execute(coll.like({'text': 'Satz'}, 'chunk-index', n=1)))  # this process's engine catches up
    found = db.vectors.verify(db.load('vector_index', 'chunk-index'))  # ... with every chunk, no more
    assert (found['missing'], found['stale'], found['extra'], found['engine']) == (0, 0, 0, len(final))


@pytest.mark.parametrize('backend', SERVERS_AND_FILES, indirect=True)
def test_two_processes_editing_rows_leave_exactly_the_chunks_of_the_last_texts(db, table_name):
    coll, chunks = chunked(db, table_name, n_extra=6)
    ids = [d['_id'] for d in db.execute(coll.find({'lang': 'de'}))]
    editors = [
        _child(
            f"""
            import random
            from superduperdb import Collection, superduper
            db = superduper(uri)
            coll = Collection({table_name!r})
            rng = random.Random({k})
            ids = {[str(i) for i in ids]!r}
            for step in range(15):  # each process edits every row; the last write wins
                key = ids[rng.randrange(len(ids))]
                body = ' '.join(f'Satz {{step}} von {k}. Noch ein Satz {{rng.random()}}.' for _ in range(3))
                db.execute(coll.update_one({{'_id': key}}, {{'$set': {{'body': body}}}}))
            """,
            engine_uri(db),
            CFG.artifact_store,
        )
        for k in range(2)
    ]
    for editor in editors:
        editor.wait(120)
        with editor.stderr:
            assert editor.returncode == 0, editor.stderr.read().decode()[-2000:]
    truth = expected_chunks(db, coll)
    assert stored_chunks(db, chunks) == truth
    # An embedder's output written just after another process deleted its chunk can outlive the
    # chunk (any output table has that race with a concurrent delete); the reconcile of change
    # capture, which runs every cdc.reconcile_interval seconds, removes such outputs: run it.
    db.cdc.poll_once()
    n = sum(len(rows) for rows in truth.values())
    status = {s['watcher']: s for s in db.status()}
    assert status[f'bow@{chunks.name}.text']['current'] == status[f'bow@{chunks.name}.text']['rows'] == n
    assert status[f'splitter@{table_name}.body']['orphaned'] == 0
    list(db.execute(coll.like({'text': 'Satz'}, 'chunk-index', n=1)))  # this process's engine catches up
    # Its check against the outputs (run every vector_search.verify_interval s) repairs what the
    # catch-up missed: in about one run of three on PostgreSQL and MariaDB, one vector of the
    # other processes' edits was missing from this process's engine after the catch-up, or one
    # was extra (an output the reconcile above removed) (found 2026-12-07, not explained yet:
    # see the closing note of issue 26). After the check, the engine holds exactly the chunks.
    index = db.load('vector_index', 'chunk-index')
    first = db.vectors.verify(index)
    assert first['missing'] + first['extra'] <= 2 and first['stale'] == 0, first
    found = db.vectors.verify(index)
    assert (found['missing'], found['stale'], found['extra'], found['engine']) == (0, 0, 0, n)


# ----- writes of another program, through change capture -------------------------------------------
CAPTURED = [
    pytest.param(b, marks=getattr(pytest.mark, b))
    for b in ('sqlite', 'duckdb', 'postgres', 'mysql', 'mongodb')
]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize('backend', CAPTURED, indirect=True)
def test_edits_another_program_makes_reach_the_chunks_through_change_capture(db, app, table_name):
    text = long_text().replace('\\', ' ').replace(':', ' ')  # a SQL literal on every server, as text()
    short = 'A short note about clocks.'
    if app.backend == 'mongodb':
        app.coll.insert_many([{'_id': 1, 'body': text}, {'_id': 2, 'body': short}])
    else:
        app.sql('CREATE TABLE {t} (id INTEGER PRIMARY KEY, body TEXT)')
        app.sql(f'INSERT INTO {{t}} (id, body) VALUES (1, {_literal(text)}), (2, {_literal(short)})')
    coll = Collection(table_name)
    chunks = index_chunks(db, coll)
    db.cdc.poll_once()  # follows the table from here
    before = expected_chunks(db, coll)
    assert stored_chunks(db, chunks) == before

    edited = text.replace('# logging', '# logging\n\nA paragraph another program added about timezones.', 1)
    EMBEDDED.clear()
    if app.backend == 'mongodb':
        app.coll.update_one({'_id': 1}, {'$set': {'body': edited}})
        app.coll.delete_one({'_id': 2})
        app.coll.insert_one({'_id': 3, 'body': 'A third text, inserted later.'})
    else:
        app.sql(f'UPDATE {{t}} SET body = {_literal(edited)} WHERE id = 1')
        app.sql('DELETE FROM {t} WHERE id = 2')
        app.sql("INSERT INTO {t} (id, body) VALUES (3, 'A third text, inserted later.')")
    db.cdc.poll_once()
    db.cdc.poll_once()  # the chunk table's own changes (the embedder's), where capture follows it
    after = expected_chunks(db, coll)
    assert set(after) == {'1', '3'} and stored_chunks(db, chunks) == after
    old = {t for rows in before.values() for _, t, _, _ in rows}
    assert sorted(EMBEDDED) == sorted(t for rows in after.values() for _, t, _, _ in rows if t not in old)
    hits = list(db.execute(coll.like({'text': 'clocks'}, 'chunk-index', n=10, chunks=True)))
    assert short not in {h['text'] for h in hits}  # the deleted row's chunk is never returned


def test_chunks_read_as_a_dataframe_with_their_rows_columns(db, table_name):
    coll, chunks = chunked(db, table_name, n_extra=1)
    frame = db.execute(chunks.find()).to_pandas()
    assert {'_id', 'parent', 'chunk', 'text', 'start', 'end', 'fingerprint', 'version'} <= set(frame.columns)
    assert len(frame) == db.execute(chunks.count()) and frame['text'].str.len().gt(0).all()
    note = db.execute(coll.find_one({'title': 'note 0'}))
    mine = frame[frame['parent'].astype(str) == str(note['_id'])]
    assert list(mine['text']) == [note['body']] and list(mine['start']) == [0]


def test_chunk_tables_and_their_vectors_read_with_plain_sql(sql_db, table_name):
    db = sql_db
    coll, chunks = chunked(db, table_name, n_extra=1)
    version = db.load('model', 'splitter').version
    pk = db.databackend.primary_key(coll.name)
    bodies = {str(row[pk]): row['body'] for row in db.execute(coll.find())}
    names = ('parent', 'chunk', 'text', 'start', 'end', 'fingerprint', 'version')
    columns = ', '.join(quote(db, c) for c in names)
    rows = raw(db, f'SELECT {columns} FROM {quote(db, chunks.name)}')
    assert len(rows) == db.execute(chunks.count()) > 2
    for parent, chunk, text, start, end, fingerprint, stored_version in rows:
        # plain columns a SQL client reads as they are: numbers and text, not encoded values
        assert all(type(v) is int for v in (chunk, start, end)) and type(text) is str
        assert bodies[str(parent)][start:end] == text
        assert fingerprint == xxhash.xxh3_64_hexdigest(text.encode())  # the chunk text's own
        assert stored_version == version
    # the embedder's vectors: the readable view of its outputs over the chunk table
    (view,) = output_views(db.databackend, output_table(chunks.name, 'text', 'bow'))
    vectors = raw(db, f'SELECT {quote(db, "text")}, output FROM {quote(db, view)}')
    assert sorted(t for t, _ in vectors) == sorted(r[2] for r in rows)
    for text, vector in vectors:
        if db.databackend.dialect == 'postgresql':  # real[]
            vector = np.array(vector, dtype='float32')
        else:  # the stored float32 bytes
            vector = np.frombuffer(bytes(vector), dtype='float32')
        np.testing.assert_array_equal(vector, hashed_words([text], DIMENSIONS)[0])


def fussy_bag_of_words(texts: list[str]) -> list[np.ndarray]:
    """The embedder, failing on chunks that mention clocks."""
    if any('clocks' in t for t in texts):
        raise ValueError('no clocks here')
    return bag_of_words(texts)


@pytest.mark.notimpl(['lake'], raises=Exception, reason='lake tables are append-only: rows are never edited')
def test_a_chunk_the_embedder_fails_on_is_in_the_ledger_under_its_row(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': 1, 'body': 'Tea is green.\n\nClocks tick. I like clocks.'}]))
    db.add(Watcher(model=SentenceChunker('sentences'), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'sentences')
    embed = FunctionModel(
        'fussy', object=fussy_bag_of_words, batched=True, encoder=array('float32', DIMENSIONS)
    )
    db.add(Watcher(model=embed, key='text', select=chunks.find()))
    parent = db.execute(coll.find_one({'n': 1}))['_id']
    failures = db.metadata.failures(db.outputs.register(chunks.name, 'text', 'fussy'))
    assert [f['source_id'] for f in failures] == [
        c['_id'] for c in db.execute(chunks.find()) if 'clocks' in c['text']
    ]
    assert all(str(f['source_id']).startswith(f'{parent}#') for f in failures)  # the row it is of
    row = {s['watcher']: s for s in db.status()}[f'sentences@{table_name}.body']
    assert (row['chunks'], row['failed_chunks']) == (2, 1)
    db.execute(coll.update_one({'n': 1}, {'$set': {'body': 'Tea is green.\n\nWatches tick.'}}))
    row = {s['watcher']: s for s in db.status()}[f'sentences@{table_name}.body']
    assert (row['chunks'], row['failed_chunks']) == (2, 0)  # the failed chunk went with its text


@pytest.mark.parametrize('backend', SERVERS_AND_FILES, indirect=True)
def test_another_process_never_returns_a_chunk_an_edit_removed(db, table_name):
    """A second Datalayer (another process's view: its own engine, loaded before the edit)
    searches after the first edited and deleted rows: it never returns their old chunks."""
    from superduperdb import superduper

    coll, chunks = chunked(db, table_name)
    other = superduper(engine_uri(db))
    try:
        query = {'text': 'JSON encoder decoder serialization'}
        assert list(other.execute(coll.like(query, 'chunk-index', n=3, chunks=True)))  # its engine: loaded
        row = db.execute(coll.find_one({'title': 'modules'}))
        json_section = row['body'][: row['body'].index('# argparse')]
        db.execute(
            coll.update_one({'_id': row['_id']}, {'$set': {'body': row['body'].replace(json_section, '')}})
        )
        db.execute(coll.delete_one({'title': 'note 0'}))
        now = {t for rows in expected_chunks(db, coll).values() for _, t, _, _ in rows}
        for found in (
            other.execute(coll.like(query, 'chunk-index', n=10, chunks=True)),
            [c for d in other.execute(coll.like(query, 'chunk-index', n=10)) for c in d['_chunks']],
        ):
            texts = [c['text'] for c in found]
            assert texts and set(texts) <= now and not any('JSON (JavaScript' in t for t in texts)
    finally:
        other.close()
