"""The README's quick start runs as written, on the embedded default (``superduper()``).

Its three code blocks run unchanged, in one namespace, in a fresh working directory; the only
thing added is the ``digits`` table the second block says it expects (scikit-learn's digits as
``pil_image`` rows with a label and a fold).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / 'README.md'


def quick_start_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index('## Quick start') : text.index('## Documentation')]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)


def insert_digits(db) -> None:
    import numpy as np
    import PIL.Image
    from sklearn.datasets import load_digits

    from superduperdb import Collection, Document
    from superduperdb.encoders.pillow import pil_image

    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    docs = [
        Document(
            {
                'img': pil_image(PIL.Image.fromarray(image, mode='L')),
                'label': int(label),
                '_fold': 'train' if i % 5 else 'valid',
            }
        )
        for i, (image, label) in enumerate(zip(images[:500], digits.target[:500]))
    ]
    db.execute(Collection('digits').insert_many(docs))


def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    from superduperdb import CFG

    blocks = quick_start_blocks()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    with CFG.override(data_backend='sqlite:///./.superduperdb/db.sqlite', artifact_store=None):
        exec(compile(blocks[0], 'README.md quick start 1', 'exec'), ns)
        db = ns['db']
        try:
            assert ns['doc']['img'].x.size == (64, 48) and ns['doc']['vec'].x.tolist() == [1.0, 1.0, 1.0]
            assert db.show('encoder') == ['numpy.float32[3]', 'pil_image']  # as the README's comment says
            insert_digits(db)
            exec(compile(blocks[1], 'README.md quick start 2', 'exec'), ns)
            valid = list(db.execute(ns['digits'].find({'_fold': 'valid'})))
            right = sum(d['_outputs']['img']['SVC'] == d['label'] for d in valid)
            assert len(valid) == 100 and right >= 90
            exec(compile(blocks[2], 'README.md quick start 3', 'exec'), ns)
            assert ns['result'].jobs and all(job.status == 'success' for job in ns['result'].jobs)
            new = db.execute(ns['digits'].find_one({'_id': ns['result'].ids[0]}))
            assert isinstance(new['_outputs']['img']['SVC'], int)
            (watcher,) = db.status()
            assert watcher['backlog'] == 0 and watcher['current'] == 501
        finally:
            db.close()
    assert (tmp_path / '.superduperdb' / 'db.sqlite').exists()  # the embedded default, where it says
