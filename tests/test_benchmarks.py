"""The benchmark scripts still run (tiny sizes; SQLite, and PostgreSQL where a script needs a
server). Every script in benchmarks/ has its smoke run here. Timings are not checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'


def run(script: str, *args: str, cwd) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_insert_find_smoke(tmp_path):
    out = run('insert_find.py', '--n', '300', '--backends', 'sqlite', cwd=tmp_path)
    assert 'sqlite     insert' in out and 'sqlite     read' in out


def test_bulk_predict_smoke(tmp_path):
    out = run('bulk_predict.py', '--n', '300', '--backends', 'sqlite', '--models', 'logreg', cwd=tmp_path)
    assert 'sqlite    logreg      300' in out


def test_embeddings_smoke(tmp_path):
    out = run('embeddings.py', '--n', '12', '--backends', 'sqlite', '--repeat', '1', cwd=tmp_path)
    assert '12 docstrings' in out and '| sqlite | 12 |' in out, out
    row = next(line for line in out.splitlines() if line.startswith('| sqlite | 12 |'))
    assert row.endswith('| onnxruntime |'), row  # the watcher ran on ONNX Runtime
    assert float(row.split('|')[6]) >= 0.9999, row  # the vectors stored are the hand loop's


def test_watch_latency_smoke(tmp_path):
    out = run(
        'watch_latency.py', '--backend', 'sqlite', '--n', '5', '--modes', 'hand', 'local', 'cdc', cwd=tmp_path
    )
    assert 'sqlite     local      5' in out and 'sqlite     cdc        5' in out


def test_peer_workload_smoke(tmp_path):
    out = run('peer_workload.py', '--n', '300', '--backends', 'sqlite', '--queries', '5', cwd=tmp_path)
    phases = ('insert', 'setup', 'backfill ', 'backfill_logreg', 'index', 'like all inmemory', 'like within')
    for phase in phases:
        assert f'sqlite         300 {phase}' in out, out
    assert 'recall@10 1.000' in out and 'n results 100%' in out


def test_mongo_outputs_smoke(tmp_path):
    out = run('mongo_outputs.py', '--n', '300', cwd=tmp_path)
    assert 'mongomock       300' in out, out
    hand_writes, sddb_writes = (int(v) for v in out.splitlines()[-1].split()[5:7])
    assert hand_writes == 1 and sddb_writes == 1  # one bulk write per chunk of 1000, on both sides


def test_lake_smoke(tmp_path):
    out = run('lake.py', '--n', '2000', '--file-rows', '1000', cwd=tmp_path)
    for step in ('find', 'predict', 'like-build', 'like-q'):
        assert f'local  {step}' in out
    assert 'rows 2000/2000' in out  # predict computed every row on both sides


def test_vector_search_smoke_on_clustered_data(tmp_path):
    out = run(
        'vector_search.py',
        '--sizes',
        '2000',
        '--queries',
        '5',
        '--data',
        'clustered',
        '--engines',
        'inmemory',
        'lancedb',
        '--ann-threshold',
        '1000',
        '--probe-fractions',
        '0.5',
        '--datalayer',
        'sqlite',
        cwd=tmp_path,
    )
    assert 'inmemory' in out and 'lancedb ivf p=0.5' in out and 'db.execute(like) sqlite' in out
    inmemory = [line for line in out.splitlines() if ' inmemory ' in line]
    assert all('1.000' in line and '100%' in line for line in inmemory), out  # exact, n results


def test_startup_smoke(tmp_path):
    out = run('startup.py', '--repeat', '1', cwd=tmp_path)
    assert 'superduper()' in out and '--help' in out and 'sqlite3' in out


def test_serve_load_smoke(tmp_path):
    out = run(
        'serve_load.py',
        *('--backends', 'sqlite', '--clients', '6', '--requests', '2', '--rows', '20'),
        cwd=tmp_path,
    )
    lines = [line.split()[:4] for line in out.splitlines()]
    for mode in ('cold', 'warm'):
        assert ['sqlite', mode, '6', 'insert'] in lines and ['sqlite', mode, '6', 'like'] in lines, out
    assert out.count('without output 0  stored twice 0') == 2, out


def test_chunks_smoke(tmp_path):
    out = run('chunks.py', '--n', '20', cwd=tmp_path)
    assert 'first sync' in out and 'no more than the changed chunks' in out


def test_folds_smoke(tmp_path):
    out = run('folds.py', '--n', '500', '--backends', 'sqlite', cwd=tmp_path)
    assert 'sqlite' in out and 'ratio' in out


def test_hybrid_smoke(tmp_path):
    out = run(
        'hybrid.py',
        '--rows',
        '300',
        '--queries',
        '5',
        '--dimensions',
        '16',
        '--backends',
        'sqlite',
        cwd=tmp_path,
    )
    for side in ('vector', 'hybrid', 'hand'):
        assert f'sqlite         300 {side:<7} p50' in out, out
    assert 'hybrid/vector' in out and 'hybrid/hand' in out


def test_hybrid_quality_smoke(tmp_path):
    out = run(
        'hybrid_quality.py',
        *('--docs', '60', '--queries', '4', '--rerank-top', '5', '--backends', 'sqlite'),
        cwd=tmp_path,
    )
    for search in ('vector', 'keyword', 'hybrid rrf', 'hybrid weighted', 'hybrid rrf + rerank'):
        assert (
            f'| sqlite | identifiers | {search} |' in out and f'| sqlite | summaries | {search} |' in out
        ), out


def test_api_models_smoke(tmp_path):
    """Against the local OpenAI-compatible server (no real API is reachable here)."""
    out = run(
        'api_models.py',
        *('--n', '200', '--requests', '50', '--window', '2', '--batch', '8', '--processes', '1'),
        cwd=tmp_path,
    )
    assert '    1     200       25' in out, out


def test_warehouse_smoke(tmp_path):
    out = run('warehouse.py', '--n', '2000', '--repeat', '1', '--chunk', '500', cwd=tmp_path)
    assert '| length | 2000 |' in out and '| vector | 2000 |' in out


def test_warehouse_search_smoke(tmp_path):
    out = run('warehouse_search.py', '--n', '2000', '--dim', '16', '--repeat', '1', cwd=tmp_path)
    assert '| 2000 | no filter |' in out and '| no |' not in out, out


def test_dask_backfill_smoke(tmp_path):
    out = run('dask_backfill.py', '--n', '500', '--workers', '1', cwd=tmp_path)
    assert 'rows/s' in out and '1.00' in out  # one worker: the speed-up it is measured against
