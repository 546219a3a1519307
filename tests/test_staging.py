"""A model change staged, measured and promoted (or not), rolled back, seen by every process.

Labelled set and embedders as in test_evaluation.py: pydoc topics, MiniLM (good) and letter
counts (weak).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_evaluation import labelled, letters

from superduperdb import CFG, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import QueryError
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from superduperdb.vector_search.staging import parse_rule
from tests.helpers import engine_uri, wait_for

SERVERS_AND_FILES = [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mysql')]
ROOT = Path(__file__).resolve().parents[1]


def weak(identifier: str = 'letters') -> FunctionModel:
    return FunctionModel(identifier, object=letters, batched=True, encoder=array('float32', 26))


def index_of(model, coll) -> VectorIndex:
    return VectorIndex('topic-index', indexing_watcher=Watcher(model=model, key='body', select=coll.find()))


def test_promotion_rules_read_as_written():
    assert parse_rule('ndcg@10 >= live')({'ndcg@10': 0.5}, {'ndcg@10': 0.5})
    assert not parse_rule('ndcg@10 > live')({'ndcg@10': 0.5}, {'ndcg@10': 0.5})
    assert parse_rule('recall@10 >= live - 0.02')({'recall@10': 0.79}, {'recall@10': 0.8})
    assert parse_rule('mrr > 0.5')({'mrr': 0.6}, {'mrr': 0.9})
    with pytest.raises(QueryError, match='promotion rule is like'):
        parse_rule('ndcg better than before')
    with pytest.raises(QueryError, match="names 'map'"):
        parse_rule('map >= live')({'mrr': 1.0}, {'mrr': 1.0})


@pytest.mark.parametrize('backend', SERVERS_AND_FILES, indirect=True)
def test_a_better_model_staged_is_promoted_for_every_process_and_rolled_back(
    db, table_name, sentence_transformer
):
    coll, rows = labelled(db, table_name, n=30)
    db.add(index_of(weak(), coll))
    other = superduper(engine_uri(db))  # another process's view of the same database
    try:
        db.stage(index_of(superduper(sentence_transformer, identifier='minilm'), coll))
        assert db.vectors.get('topic-index').version == 0  # built, but not serving
        assert other.vectors.get('topic-index').indexing_watcher.model.identifier == 'letters'
        # a write while staged reaches both versions (the staged one is kept in step)
        db.execute(coll.insert_one({'topic': 'zzz', 'body': 'Completely new text about orbital mechanics.'}))

        result = db.promote('topic-index', 'topics', k=5)
        assert result.promoted and (result.live, result.staged) == (0, 1), result
        assert result.staged_metrics['ndcg@5'] > result.live_metrics['ndcg@5']
        assert result.cost['rows'] >= len(rows) and result.cost['seconds'] > 0
        assert db.vectors.get('topic-index').version == 1
        wait_for(lambda: other.vectors.get('topic-index').version == 1, 'the other process to switch', 5)
        found = list(other.execute(coll.like({'body': 'orbital mechanics'}, 'topic-index', n=1)))
        assert found[0]['topic'] == 'zzz'  # written while staged, found by the promoted version
        versions = [e['version'] for e in db.evaluations('topic-index')]
        assert sorted(versions) == [0, 1]  # both measured, both kept

        assert db.rollback('topic-index') == 0
        wait_for(lambda: other.vectors.get('topic-index').version == 0, 'the other process to go back', 5)
        assert db.vectors.get('topic-index').indexing_watcher.model.identifier == 'letters'
        with pytest.raises(QueryError, match='no earlier version'):
            db.rollback('topic-index')
    finally:
        other.close()


def test_a_worse_model_staged_is_not_promoted(db, table_name, sentence_transformer):
    if db.databackend.name not in ('sqlite', 'mongodb'):
        pytest.skip('one file backend and MongoDB (the server ones: the test above)')
    coll, _ = labelled(db, table_name, n=20)
    db.add(index_of(superduper(sentence_transformer, identifier='minilm'), coll))
    db.stage(index_of(weak(), coll))
    result = db.promote('topic-index', 'topics', k=5, rule='ndcg@5 >= live - 0.01')
    assert not result.promoted and 'keeps serving' in result.reason
    assert db.vectors.get('topic-index').version == 0
    found = list(db.execute(coll.like({'body': 'the assert statement'}, 'topic-index', n=1)))
    assert found and db.vectors.get('topic-index').indexing_watcher.model.identifier == 'minilm'
    db.remove('vector_index', 'topic-index', 1, force=True)  # the user drops the staged version
    with pytest.raises(QueryError, match='no staged version'):
        db.promote('topic-index', 'topics')
    assert db.vectors.get('topic-index').version == 0


def slow_letters(texts: list[str]) -> list[np.ndarray]:
    time.sleep(1.0)
    return letters(texts)


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_staged_build_killed_mid_way_leaves_the_live_version_serving(db, table_name):
    coll, _ = labelled(db, table_name, n=30)
    db.add(index_of(weak(), coll))
    before = [d['topic'] for d in db.execute(coll.like({'body': 'the assert statement'}, 'topic-index', n=3))]
    path = os.pathsep.join([str(ROOT), str(ROOT / 'tests')])
    code = textwrap.dedent(
        f"""
        import faulthandler; faulthandler.dump_traceback_later(100, exit=True)
        from superduperdb import Collection, VectorIndex, Watcher, superduper
        from superduperdb.encoders.numpy import array
        from superduperdb.models.function import FunctionModel
        from test_staging import slow_letters
        db = superduper({engine_uri(db)!r})
        db.chunk_size = 2
        model = FunctionModel('slow', object=slow_letters, batched=True, batch_size=2,
                              encoder=array('float32', 26))
        coll = Collection({table_name!r})
        watcher = Watcher(model=model, key='body', select=coll.find())
        db.stage(VectorIndex('topic-index', indexing_watcher=watcher))
        """
    )
    env = {**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store, 'PYTHONPATH': path}
    child = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        # the staged version's watcher backfills first (15 batches of a second each)
        wait_for(lambda: f'slow@{table_name}.body' in db.show('watcher'), 'the staged watcher')
        time.sleep(1.5)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    db.vectors.forget()
    assert db.vectors.get('topic-index').version == 0  # the live version serves on
    after = [d['topic'] for d in db.execute(coll.like({'body': 'the assert statement'}, 'topic-index', n=3))]
    assert after == before
    with pytest.raises(QueryError, match='still being built|no staged version'):
        db.promote('topic-index', 'topics')  # nothing built to promote


def test_the_cli_promotes_a_staged_version_and_rolls_it_back(tmp_path):
    from tests.helpers import run_cli

    uri = f'sqlite:///{tmp_path}/cli.db'
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        coll, _ = labelled(db, 'topics_table', n=8)
        db.add(index_of(weak(), coll))
        db.stage(index_of(weak('letters-again'), coll))  # as good: the default rule (>= live) passes
        db.close()
    promoted = run_cli('promote', 'topic-index', 'topics', '--k', '3', '--uri', uri, env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert (
        'version 1 against live version 0' in promoted.stdout and 'promoted: it serves now' in promoted.stdout
    )
    assert 'ndcg@3' in promoted.stdout
    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        assert db.vectors.get('topic-index').version == 1
        db.close()
    back = run_cli('rollback', 'topic-index', '--uri', uri, env=env)
    assert back.returncode == 0 and 'version 0 serves again' in back.stdout, back.stderr
    again = run_cli('rollback', 'topic-index', '--uri', uri, env=env)
    assert again.returncode == 1 and 'no earlier version' in again.stderr
    with CFG.override(artifact_store=env['SUPERDUPERDB_ARTIFACT_STORE']):
        db = superduper(uri)
        assert db.vectors.get('topic-index').version == 0
        db.close()
