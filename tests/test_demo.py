"""The README's first command: the demo runs to completion on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_on_embedded_default(tmp_path):
    env = {
        **os.environ,
        'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts',
        'COLUMNS': '200',
    }
    for _ in range(2):  # a rerun starts over cleanly
        result = subprocess.run(
            [sys.executable, '-m', 'superduperdb', 'demo', '--limit', '300'],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / '.superduperdb' / 'db.sqlite').exists()
    out = result.stdout
    assert '300 rows' in out
    assert '240 / 60' in out  # train / valid folds
    assert 'image pixels == stored vector' in out and 'True' in out
    assert 'numpy.float32[64], pil_image' in out
    assert '60 outputs written back, accuracy' in out
    accuracy = float(out.split('accuracy ')[1].split()[0])
    assert accuracy >= 0.9
