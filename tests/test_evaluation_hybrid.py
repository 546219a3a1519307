"""Evaluating keyword, hybrid and reranked searches (``db.evaluate(..., keyword=, fuse=, rerank=)``).

The corpus is a small support knowledge base: some rows hold exact identifiers (error codes,
part numbers, function names) that a user types as the whole query; the rest answer questions
asked in other words. The vector side is the deterministic hashed-words embedder (word
buckets; identifiers collide with other words), the keyword side each backend's own engine.
"""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest

from superduperdb import Collection, EvaluationSet, KeywordIndex, VectorIndex, Watcher
from superduperdb.base.exceptions import ComponentNotFound, QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from tests.helpers import hashed_words

# the CLI runs in another process: the models defined here are stored by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DOCS = {
    'e4471': 'Error E-4471 means the pump controller lost the signal of its pressure sensor.',
    'winperm': 'Windows update fails with 0x80070005 when the account has no rights to the folder.',
    'gasket': 'Part PX-3390 is the replacement gasket for the rear hatch of the van.',
    'parser': 'parse_config_file reads the settings file from disk and returns a dictionary.',
    'printer': 'The printer stops printing when the paper tray is empty; refill the tray.',
    'jam': 'A paper jam in the second tray: open the side door and pull the sheet out gently.',
    'disk': 'The disk is full: delete old backups or move large files to another drive.',
    'network': 'No network connection: check the cable, then restart the router and the modem.',
    'password': 'To reset your password, open the account page and choose forgot password.',
    'battery': 'The laptop battery drains quickly when the screen brightness is at its highest.',
    'slow': 'The computer is slow because too many programs start when it boots.',
    'email': 'Email is not sent when the outgoing server needs a password you did not enter.',
}
#: a user typing an identifier, or describing a problem in the words of its row
IDENTIFIERS = {'E-4471': 'e4471', '0x80070005': 'winperm', 'PX-3390': 'gasket', 'parse_config_file': 'parser'}
QUESTIONS = {
    'printer tray empty': 'printer',
    'paper jam second tray': 'jam',
    'disk full delete backups': 'disk',
    'restart the router network connection': 'network',
    'reset password account': 'password',
    'battery drains quickly': 'battery',
}


def corpus(db, table: str) -> tuple[Collection, dict[str, str]]:
    """The rows, a hashed-words vector index ``vec``, a keyword index ``kw``, and the set
    ``support`` (every query) and ``identifiers``; returns the collection and key by name."""
    coll = Collection(table)
    db.execute(coll.insert_many([{'name': name, 'body': body} for name, body in DOCS.items()]))
    keys = {d['name']: str(d['_id']) for d in db.execute(coll.find())}
    model = FunctionModel(
        'hashed', object=lambda texts: hashed_words(texts, 16), batched=True, encoder=array('float32', 16)
    )
    db.add(VectorIndex('vec', indexing_watcher=Watcher(model=model, key='body', select=coll.find())))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    queries = {**IDENTIFIERS, **QUESTIONS}
    db.add(
        EvaluationSet('support', queries=[{'query': q, 'relevant': [keys[n]]} for q, n in queries.items()])
    )
    db.add(
        EvaluationSet(
            'identifiers', queries=[{'query': q, 'relevant': [keys[n]]} for q, n in IDENTIFIERS.items()]
        )
    )
    return coll, keys


def test_keyword_and_hybrid_find_identifiers_and_each_record_names_its_search(sql_db, table_name):
    db = sql_db
    if db.databackend.name not in ('sqlite', 'postgresql', 'mysql'):
        pytest.skip('the native full-text engines here; BM25 elsewhere: the next test')
    corpus(db, table_name)
    vector = db.evaluate('vec', 'support', k=3)
    keyword = db.evaluate(evaluation_set='support', keyword='kw', k=3)
    hybrid = db.evaluate('vec', 'support', keyword='kw', k=3)
    weighted = db.evaluate('vec', 'support', keyword='kw', fuse='weighted', k=3)
    rr = lambda e: {q['query']: q['rr'] for q in e.per_query}  # noqa: E731
    assert all(rr(keyword)[q] == 1.0 for q in IDENTIFIERS), rr(keyword)  # each identifier's row first
    assert min(rr(vector)[q] for q in IDENTIFIERS) == 0.0  # which the word buckets miss (PX-3390)
    for fused in (hybrid, weighted):  # fusion keeps the keyword side's finds in the top k
        assert all(rr(fused)[q] >= max(0.5, rr(vector)[q]) for q in IDENTIFIERS), rr(fused)
    recall = lambda e: e.metrics['recall@3']  # noqa: E731
    assert recall(hybrid) >= min(recall(vector), recall(keyword))
    assert recall(weighted) >= min(recall(vector), recall(keyword))
    assert [e.search for e in (vector, keyword, hybrid, weighted)] == [
        'vector',
        'keyword',
        'hybrid',
        'hybrid',
    ]
    assert keyword.model is None and keyword.index == 'kw' and keyword.keyword['engine'] == 'native'
    assert hybrid.fusion == {'method': 'rrf', 'k': 60, 'weights': {}, 'n': None}
    assert weighted.fusion['method'] == 'weighted' and vector.keyword is None and vector.fusion is None
    kept = {e['id']: e for e in db.evaluations()}
    assert kept[hybrid.id]['keyword']['identifier'] == 'kw' and kept[hybrid.id]['search'] == 'hybrid'
    assert [e['id'] for e in db.evaluations('kw')] == [keyword.id]
    assert str(hybrid).startswith('hybrid(rrf k=60) vec + kw on support')


def test_keyword_and_hybrid_evaluation_on_every_backend(db, table_name):
    _, keys = corpus(db, table_name)
    keyword = db.evaluate(None, 'identifiers', keyword='kw', k=3)
    hybrid = db.evaluate('vec', 'identifiers', keyword='kw', fuse={'method': 'rrf', 'k': 10}, k=3)
    assert keyword.metrics['mrr'] == 1.0, keyword.per_query  # each identifier's row first
    assert hybrid.metrics['recall@3'] == 1.0, hybrid.per_query
    assert hybrid.fusion['k'] == 10
    filtered = db.evaluate(
        'vec', 'identifiers', keyword='kw', k=3, filter={'name': {'$in': ['e4471', 'gasket']}}
    )
    allowed = {keys['e4471'], keys['gasket']}
    assert all(set(q['found']) <= allowed for q in filtered.per_query)


def test_bad_arguments_say_what_to_do(tmp_path):
    from superduperdb import CFG, superduper

    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'):
        db = superduper(f'sqlite:///{tmp_path}/bad.db')
        corpus(db, 'support')
        bad_arguments(db)
        db.close()


def bad_arguments(db) -> None:
    with pytest.raises(ComponentNotFound, match="no keyword index 'nope'; there are: kw"):
        db.evaluate('vec', 'support', keyword='nope')
    with pytest.raises(QueryError, match='fuse=\\) fuses the results of a vector index and a keyword index'):
        db.evaluate(None, 'support', keyword='kw', fuse='rrf')
    with pytest.raises(QueryError, match='fuse=\\) fuses'):
        db.evaluate('vec', 'support', fuse='rrf')
    with pytest.raises(QueryError, match='name a vector index'):
        db.evaluate(evaluation_set='support')
    with pytest.raises(QueryError, match='needs an evaluation set'):
        db.evaluate('vec')
    with pytest.raises(QueryError, match="fuse\\(\\) method is one of rrf, weighted, got 'max'"):
        db.evaluate('vec', 'support', keyword='kw', fuse='max')
    with pytest.raises(QueryError, match='takes method, k, weights and n'):
        db.evaluate('vec', 'support', keyword='kw', fuse={'method': 'rrf', 'depth': 3})
    with pytest.raises(QueryError, match='rerank\\(..., top=\\) takes a positive int'):
        db.evaluate('vec', 'support', rerank=lambda q, row: 0.0, rerank_top=0)


def minilm_pairs(model):
    """``(query, text)`` pairs -> cosine similarity of their MiniLM embeddings (a bi-encoder)."""

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        queries = model.encode([q for q, _ in pairs], normalize_embeddings=True)
        texts = model.encode([t for _, t in pairs], normalize_embeddings=True)
        return [float(s) for s in (queries * texts).sum(axis=1)]

    return score


def test_a_minilm_reranker_lifts_the_keyword_search(sql_db, table_name, sentence_transformer):
    """A cross-encoder with real weights cannot be downloaded here (no network), so MiniLM used
    as a bi-encoder stands in: a model whose predict takes (query, text) pairs and returns their
    cosine similarity, which is the contract a cross-encoder reranker meets too."""
    db = sql_db
    if db.databackend.name not in ('sqlite', 'postgresql'):
        pytest.skip('MiniLM reranking on SQLite and PostgreSQL')
    corpus(db, table_name)
    # the hashed-words vectors (16 buckets) put many rows near any question: a reranker must sort them
    reranker = FunctionModel('minilm-pairs', object=minilm_pairs(sentence_transformer), batched=True)
    plain = db.evaluate('vec', 'support', k=1)
    reranked = db.evaluate('vec', 'support', rerank=reranker, rerank_top=12, k=1)
    assert reranked.metrics['recall@1'] >= plain.metrics['recall@1']
    assert reranked.metrics['recall@1'] >= 0.8, reranked.per_query
    assert reranked.search == 'vector+rerank' and reranked.rerank == {
        'model': ['minilm-pairs', None],
        'top': 12,
    }
    assert str(reranked).startswith('vector vec, rerank minilm-pairs top 12')
    assert all(len(q['found']) == 1 for q in reranked.per_query)  # k kept after reranking


def pair_features(pairs: list[tuple[str, str]]) -> np.ndarray:
    """What a tiny cross-encoder sees of a pair: word overlap, its share of the query, and
    whether a token with a digit in it is shared (identifiers)."""

    def words(text: str) -> set[str]:
        return {w.strip('.,:;()').lower() for w in text.split()}

    rows = []
    for query, text in pairs:
        q, t = words(query), words(text)
        shared = q & t
        rows.append(
            [len(shared), len(shared) / max(1, len(q)), any(any(c.isdigit() for c in w) for w in shared)]
        )
    return np.asarray(rows, dtype=float)


def test_a_reranker_trained_here_is_stored_and_named_by_the_cli(tmp_path):
    """A small cross-encoder-like reranker: logistic regression over features of the pair,
    trained on this corpus's (query, row) pairs, stored as a model and named by identifier."""
    from sklearn.linear_model import LogisticRegression

    from superduperdb import CFG, superduper
    from tests.helpers import run_cli

    queries = {**IDENTIFIERS, **QUESTIONS}
    pairs = [(q, body) for q in queries for body in DOCS.values()]
    labels = [DOCS[queries[q]] == body for q, body in pairs]
    clf = LogisticRegression().fit(pair_features(pairs), labels)

    def score(batch: list[tuple[str, str]]) -> list[float]:
        return list(clf.predict_proba(pair_features(batch))[:, 1])

    uri = f'sqlite:///{tmp_path}/rerank.db'
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        corpus(db, 'support')
        db.add(FunctionModel('pairs', object=score, batched=True))
        plain = db.evaluate('vec', 'support', k=1)
        reranked = db.evaluate('vec', 'support', rerank='pairs', rerank_top=12, k=1)
        db.close()
    assert reranked.metrics['mrr'] > plain.metrics['mrr'] and reranked.metrics['recall@1'] >= 0.9
    assert reranked.rerank == {'model': ['pairs', 0], 'top': 12}
    args = ('evaluate', 'vec', 'support', '--keyword', 'kw', '--fuse', 'weighted', '--rerank', 'pairs')
    done = run_cli(*args, '--rerank-top', '12', '--k', '1', '--uri', uri, env=env)
    assert done.returncode == 0, done.stderr
    assert 'hybrid(weighted) vec + kw, rerank pairs top 12 (hashed v0, inmemory) on support' in done.stdout
    keyword_only = run_cli('evaluate', '--keyword', 'kw', 'support', '--json', '--uri', uri, env=env)
    assert keyword_only.returncode == 0, keyword_only.stderr
    assert '"search": "keyword"' in keyword_only.stdout
    bad = run_cli('evaluate', 'vec', 'support', '--fuse', 'rrf', '--uri', uri, env=env)
    assert bad.returncode == 1 and 'fuse=) fuses' in bad.stderr
