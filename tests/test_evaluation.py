"""Retrieval evaluation: evaluation sets, and metrics that say which index finds better.

The labelled set is Python's own documentation as it ships (``pydoc_data.topics``: a topic's
first sentence is the query, the topic's row the relevant one); the embedders are MiniLM and a
deliberately weak one (letter counts), whose metrics must come out in that order.
"""

from __future__ import annotations

import json
import math
import sys

import cloudpickle
import numpy as np
import pytest

from superduperdb import Collection, EvaluationSet, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import ComponentError, QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from superduperdb.vector_search.evaluate import _measured

# the CLI runs in another process: the embedders defined here are stored by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def letters(texts: list[str]) -> list[np.ndarray]:
    """A weak embedder: how often each letter comes (no words, no meaning)."""
    out = np.zeros((len(texts), 26), dtype='float32')
    for i, text in enumerate(texts):
        for ch in text.lower():
            if 'a' <= ch <= 'z':
                out[i, ord(ch) - 97] += 1
    return list(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9))


def topics(n: int = 40) -> list[dict]:
    from pydoc_data.topics import topics as docs

    rows = []
    for name in sorted(docs)[:n]:
        paragraphs = [
            p.strip() for p in docs[name].split('\n\n') if p.strip() and not p.startswith(('*', '='))
        ]
        first = next(p for p in paragraphs[1:] if len(p) > 40)
        rows.append(
            {'topic': name, 'body': docs[name][:2000], 'query': first.split('. ')[0].replace('\n', ' ')}
        )
    return rows


def weak_index(db, coll, name: str = 'weak') -> None:
    model = FunctionModel(name, object=letters, batched=True, encoder=array('float32', 26))
    db.add(
        VectorIndex(f'{name}-index', indexing_watcher=Watcher(model=model, key='body', select=coll.find()))
    )


def labelled(db, table: str, n: int = 40) -> tuple[Collection, list[dict]]:
    coll = Collection(table)
    rows = topics(n)
    db.execute(coll.insert_many([{'topic': r['topic'], 'body': r['body']} for r in rows]))
    keys = {d['topic']: str(d['_id']) for d in db.execute(coll.find())}
    db.add(
        EvaluationSet('topics', queries=[{'query': r['query'], 'relevant': [keys[r['topic']]]} for r in rows])
    )
    return coll, rows


def test_the_metrics_by_hand():
    relevant = {'a': 2.0, 'b': 1.0}
    m = _measured(['x', 'a', 'y', 'b'], relevant, k=4)
    assert m['recall'] == 1.0 and m['precision'] == 0.5 and m['rr'] == 0.5
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert m['ndcg'] == pytest.approx(dcg / ideal)
    assert _measured(['x', 'y'], relevant, k=2) == {'recall': 0.0, 'precision': 0.0, 'rr': 0.0, 'ndcg': 0.0}
    assert _measured(['b', 'x'], relevant, k=1)['recall'] == 0.5  # k cuts what was found


def test_an_evaluation_set_says_what_is_wrong_with_it(tmp_path):
    with pytest.raises(ComponentError, match='needs queries'):
        EvaluationSet('empty', queries=[])
    with pytest.raises(ComponentError, match='names no relevant row'):
        EvaluationSet('none', queries=[{'query': 'q', 'relevant': []}])
    with pytest.raises(ComponentError, match='grades are positive'):
        EvaluationSet('graded', queries=[{'query': 'q', 'relevant': {'a': 0}}])
    with pytest.raises(ComponentError, match='each is like'):
        EvaluationSet('shape', queries=['just a string'])
    with pytest.raises(ComponentError, match='.jsonl or .csv'):
        EvaluationSet.from_file('file', tmp_path / 'set.txt')


def test_an_evaluation_set_from_rows_a_frame_and_files_round_trips(tmp_path):
    import pandas as pd

    rows = [('reset password', 3), ('reset password', 8, 2), ('billing', 'x1')]
    expected = [
        {'query': 'reset password', 'relevant': {'3': 1.0, '8': 2.0}},
        {'query': 'billing', 'relevant': {'x1': 1.0}},
    ]
    assert EvaluationSet.from_rows('a', rows).queries == expected
    frame = pd.DataFrame(
        {'q': ['reset password', 'reset password', 'billing'], 'r': [3, 8, 'x1'], 'g': [1, 2, 1]}
    )
    assert EvaluationSet.from_frame('b', frame, query='q', relevant='r', grade='g').queries == expected
    with pytest.raises(ComponentError, match="no column 'query'"):
        EvaluationSet.from_frame('c', frame)
    (tmp_path / 'set.jsonl').write_text('\n'.join(json.dumps(q) for q in expected))
    assert EvaluationSet.from_file('d', tmp_path / 'set.jsonl').queries == expected
    (tmp_path / 'set.csv').write_text(
        'query,relevant,grade\nreset password,3,1\nreset password,8,2\nbilling,x1,\n'
    )
    assert EvaluationSet.from_file('e', tmp_path / 'set.csv').queries == expected
    db = superduper(f'sqlite:///{tmp_path}/e.db')
    db.add(EvaluationSet.from_rows('stored', rows, key='question'))
    loaded = db.load('evaluation_set', 'stored')
    assert (loaded.queries, loaded.key) == (expected, 'question')


def test_minilm_finds_better_than_a_weak_embedder_and_the_results_are_kept(
    db, table_name, sentence_transformer
):
    if db.databackend.name not in ('sqlite', 'postgresql'):
        pytest.skip('MiniLM against the weak embedder on SQLite and PostgreSQL (the rest: next test)')
    coll, rows = labelled(db, table_name)
    weak_index(db, coll)
    minilm = superduper(sentence_transformer, identifier='minilm')
    db.add(
        VectorIndex('minilm-index', indexing_watcher=Watcher(model=minilm, key='body', select=coll.find()))
    )
    good = db.evaluate('minilm-index', 'topics', k=5)
    bad = db.evaluate('weak-index', 'topics', k=5)
    for metric, margin in (('recall@5', 0.1), ('mrr', 0.2), ('ndcg@5', 0.2)):  # measured: 1.0/0.85, 0.96/0.60
        assert good.metrics[metric] > bad.metrics[metric] + margin, (metric, good.metrics, bad.metrics)
    assert good.metrics['recall@5'] >= 0.8 and good.queries == len(rows)
    assert good.metrics['precision@5'] == pytest.approx(good.metrics['recall@5'] / 5)  # one relevant row each
    assert 0 < good.metrics['latency_p50_ms'] <= good.metrics['latency_p95_ms']
    assert good.model == ['minilm', 0] and good.engine == 'inmemory'
    kept = db.evaluations('minilm-index')
    assert [e['metrics'] for e in kept] == [good.metrics] and kept[0]['set_version'] == 0
    assert {e['index'] for e in db.evaluations()} == {'minilm-index', 'weak-index'}


def test_evaluation_on_every_backend_with_a_filter_and_its_history(db, table_name):
    coll, rows = labelled(db, table_name, n=12)
    weak_index(db, coll)
    first = db.evaluate('weak-index', 'topics', k=3)
    # a filter keeps the search among the rows it matches: only those can be found
    half = [r['topic'] for r in rows[:6]]
    filtered = db.evaluate('weak-index', 'topics', k=3, filter={'topic': {'$in': half}})
    assert all(
        set(q['found']) <= {str(d['_id']) for d in db.execute(coll.find({'topic': {'$in': half}}))}
        for q in filtered.per_query
    )
    assert filtered.filter == {'topic': {'$in': half}}
    again = db.evaluate('weak-index', 'topics', k=3)
    quality = lambda e: {k: v for k, v in e.metrics.items() if not k.startswith('latency')}  # noqa: E731
    assert quality(again) == quality(first)  # the same index, the same set: the same figures
    assert [e['id'] for e in db.evaluations('weak-index')] == [first.id, filtered.id, again.id]
    with pytest.raises(QueryError, match='k='):
        db.evaluate('weak-index', 'topics', k=0)


def test_a_chunked_index_is_evaluated_on_its_rows(db, table_name):
    from superduperdb.models.chunkers import CharacterChunker

    coll, rows = labelled(db, table_name, n=10)
    db.add(Watcher(model=CharacterChunker('pieces', size=300, overlap=0), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'pieces')
    model = FunctionModel('weak', object=letters, batched=True, encoder=array('float32', 26))
    db.add(
        VectorIndex('chunk-index', indexing_watcher=Watcher(model=model, key='text', select=chunks.find()))
    )
    result = db.evaluate('chunk-index', 'topics', k=3)
    parents = {str(d['_id']) for d in db.execute(coll.find())}
    assert all(q['found'] and set(q['found']) <= parents for q in result.per_query)  # rows, not chunks
    assert len(result.per_query[0]['found']) == 3  # n counts rows


def test_the_cli_evaluates_an_index_and_lists_its_history(tmp_path):
    from tests.helpers import run_cli

    uri = f'sqlite:///{tmp_path}/cli.db'
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    from superduperdb import CFG

    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        coll, _ = labelled(db, 'topics_table', n=8)
        weak_index(db, coll)
        expected = db.evaluate('weak-index', 'topics', k=3)
        db.close()
    done = run_cli('evaluate', 'weak-index', 'topics', '--k', '3', '--uri', uri, '--json', env=env)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    quality = {k: v for k, v in expected.metrics.items() if not k.startswith('latency')}
    assert {k: v for k, v in printed['metrics'].items() if k in quality} == quality
    listed = run_cli('evaluate', 'weak-index', 'topics', '--history', '--uri', uri, env=env)
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 2  # both kept
    assert 'weak v0, inmemory' in listed.stdout and 'recall@3' in listed.stdout
    missing = run_cli('evaluate', 'weak-index', 'no-such-set', '--uri', uri, env=env)
    assert missing.returncode == 1 and 'no-such-set' in missing.stderr


def test_the_server_evaluates_for_a_writer_and_lists_for_a_reader(tmp_path):
    import httpx

    from superduperdb import CFG
    from superduperdb.server.app import create_app, running

    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'):
        db = superduper(f'sqlite:///{tmp_path}/served.db')
        coll, _ = labelled(db, 'topics_table', n=8)
        weak_index(db, coll)
        expected = db.evaluate('weak-index', 'topics', k=3)
        with running(create_app(db, token='w', read_token='r')) as url:
            call = lambda method, path, token, **kw: httpx.request(  # noqa: E731
                method, url + path, headers={'Authorization': f'Bearer {token}'}, timeout=60, **kw
            )
            body = {'evaluation_set': 'topics', 'k': 3}
            assert call('POST', '/vector_indexes/weak-index/evaluate', 'r', json=body).status_code == 403
            done = call('POST', '/vector_indexes/weak-index/evaluate', 'w', json=body)
            assert done.status_code == 200, done.text
            assert done.json()['metrics']['mrr'] == expected.metrics['mrr']
            listed = call('GET', '/vector_indexes/weak-index/evaluations', 'r').json()['evaluations']
            assert [e['id'] for e in listed] == [expected.id, done.json()['id']]
            bad = call(
                'POST', '/vector_indexes/weak-index/evaluate', 'w', json={**body, 'evaluation_set': 'nope'}
            )
            assert bad.status_code == 404 and 'nope' in bad.text
        db.close()


def identity(v):
    return np.asarray(v, dtype='float32')


def test_lancedb_probe_fraction_trades_recall_for_speed_and_each_setting_is_recorded(tmp_path):
    """The recall a user gives up for speed, measured: exact neighbours as the relevant rows,
    LanceDB's IVF index probed at a fraction of its partitions and at all of them."""
    pytest.importorskip('lancedb')
    from superduperdb import CFG

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype('float32')
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(3000, size=40, replace=False)] + rng.normal(scale=0.3, size=(40, 16)).astype(
        'float32'
    )
    settings = {
        'engine': 'lancedb',
        'path': str(tmp_path / 'vectors'),
        'ann_threshold': 1000,
        'partition_rows': 60,
    }
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts', vector_search=settings):
        db = superduper(f'sqlite:///{tmp_path}/ann.db')
        coll = Collection('points')
        db.execute(coll.insert_many([{'_id': f'p{i}', 'v': v.tolist()} for i, v in enumerate(vectors)]))
        model = superduper(identity, identifier='identity', encoder=array('float32', 16))
        db.add(VectorIndex('ann', indexing_watcher=Watcher(model=model, key='v', select=coll.find())))
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        db.add(
            EvaluationSet(
                'neighbours',
                queries=[
                    {'query': q.tolist(), 'relevant': [f'p{i}' for i in order]}
                    for q, order in zip(queries, exact)
                ],
            )
        )
        found = {}
        for fraction in (0.05, 1.0):
            with CFG.override(vector_search={'probe_fraction': fraction}):
                db.vectors.unload('ann')  # this process's engine built again, with the setting
                found[fraction] = db.evaluate('ann', 'neighbours', k=10)
        db.close()
    assert found[1.0].metrics['recall@10'] == pytest.approx(1.0)  # every partition probed: exact
    assert found[0.05].metrics['recall@10'] < 0.9  # a twentieth of them: faster, and it misses
    assert found[0.05].settings['probe_fraction'] == 0.05 and found[1.0].settings['probe_fraction'] == 1.0
    assert found[0.05].engine == 'lancedb'


def test_an_evaluation_set_from_labels_kept_in_a_table(db, table_name):
    labels = Collection(table_name)
    db.execute(
        labels.insert_many(
            [
                {'question': 'reset my password', 'doc': 'pw', 'grade': 2},
                {'question': 'reset my password', 'doc': 'login', 'grade': 1},
                {'question': 'where is my parcel', 'doc': 'ship', 'grade': 1},
            ]
        )
    )
    built = EvaluationSet.from_query(
        'labels', db, labels.find(), query='question', relevant='doc', grade='grade'
    )
    assert sorted(built.queries, key=lambda q: q['query']) == [
        {'query': 'reset my password', 'relevant': {'pw': 2.0, 'login': 1.0}},
        {'query': 'where is my parcel', 'relevant': {'ship': 1.0}},
    ]
    with pytest.raises(ComponentError, match='found no rows'):
        EvaluationSet.from_query(
            'none', db, labels.find({'question': 'nothing'}), query='question', relevant='doc'
        )


def pixels(image) -> np.ndarray:
    """An image embedder: its pixels, scaled to unit length."""
    v = np.asarray(image, dtype='float32').ravel()
    return v / (np.linalg.norm(v) or 1.0)


def test_an_image_index_is_evaluated_on_image_queries_kept_in_the_set(tmp_path):
    """Queries that are not JSON (images) are kept pickled beside the set and searched with as
    the index's model takes them; sklearn's digits, a query a noisy copy of a stored image."""
    import PIL.Image
    from sklearn.datasets import load_digits

    from superduperdb import CFG
    from superduperdb.encoders.pillow import pil_image

    digits = (load_digits().images[:60] * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'):
        db = superduper(f'sqlite:///{tmp_path}/digits.db')
        coll = Collection('digits')
        db.execute(
            coll.insert_many(
                [{'_id': f'd{i}', 'img': pil_image(PIL.Image.fromarray(a))} for i, a in enumerate(digits)]
            )
        )
        model = superduper(pixels, identifier='pixels', encoder=array('float32', 64))
        db.add(
            VectorIndex('digits-index', indexing_watcher=Watcher(model=model, key='img', select=coll.find()))
        )
        noisy = [
            PIL.Image.fromarray(np.clip(digits[i] + rng.normal(0, 8, (8, 8)), 0, 255).astype(np.uint8))
            for i in range(10)
        ]
        db.add(
            EvaluationSet(
                'noisy-digits', queries=[{'query': im, 'relevant': [f'd{i}']} for i, im in enumerate(noisy)]
            )
        )
        loaded = db.load('evaluation_set', 'noisy-digits', cached=False)
        assert isinstance(loaded.query_value(loaded.queries[0]), PIL.Image.Image)  # kept as an image
        assert loaded.queries[0]['query'] == {'_value': 0}  # the JSON part says where it is
        result = db.evaluate('digits-index', 'noisy-digits', k=1)
        db.close()
    assert result.metrics['recall@1'] >= 0.9 and result.per_query[0]['query'] == {'_value': 0}
