"""``superduperdb demo``: the datalayer on the embedded default, with data that ships in packages.

It stores scikit-learn's bundled digits as images plus their pixel vectors,
queries them back with filters, shows the encoders registered as components,
trains a classifier on the stored images and writes its predictions back,
and prints a summary. Everything lands in the configured database (by default
the SQLite file under ``./.superduperdb``) and is removed first on a rerun.
"""

from __future__ import annotations

import sys
import time
from typing import Any

TABLE = 'demo_digits'


def _image_to_vector(image: Any) -> Any:
    import numpy as np

    return np.asarray(image, dtype='float32').reshape(-1) / 16.0


def run(uri: str | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """Run the demo; return the figures it printed (for tests)."""
    import numpy as np
    import PIL.Image
    from rich.console import Console
    from rich.table import Table as RichTable
    from sklearn.datasets import load_digits
    from tqdm import tqdm

    from superduperdb import Collection, Document, superduper
    from superduperdb.encoders.numpy import array
    from superduperdb.encoders.pillow import pil_image

    console = Console(stderr=False)
    db = superduper(uri)
    console.print(f'[bold]superduperdb demo[/bold] on {db.databackend.describe()}')
    db.drop_table(TABLE)
    digits = load_digits()
    n = len(digits.images) if limit is None else min(limit, len(digits.images))
    coll = Collection(TABLE)
    vector = array('float32', 64)
    figures: dict[str, Any] = {}

    start = time.perf_counter()
    step = 200
    with tqdm(total=n, desc='storing digits as images', file=sys.stderr, disable=None) as bar:
        for lo in range(0, n, step):
            docs = []
            for i in range(lo, min(lo + step, n)):
                pixels = (digits.images[i] * 16).clip(0, 255).astype('uint8')
                docs.append(
                    Document(
                        {
                            'img': pil_image(PIL.Image.fromarray(pixels)),
                            'pixels': vector(digits.data[i].astype('float32')),
                            'label': int(digits.target[i]),
                            '_fold': 'valid' if i % 5 == 0 else 'train',
                        }
                    )
                )
            db.execute(coll.insert_many(docs))
            bar.update(len(docs))
    figures['inserted'] = n
    figures['insert_seconds'] = time.perf_counter() - start

    figures['train'] = db.execute(coll.count({'_fold': 'train'}))
    figures['valid'] = db.execute(coll.count({'_fold': 'valid'}))
    threes = list(db.execute(coll.find({'label': 3, '_fold': 'valid'}).limit(5)))
    figures['threes_found'] = len(threes)
    first = db.execute(coll.find_one({'label': 7}))
    image = first['img'].x
    figures['image'] = f'{type(image).__name__} {image.size[0]}x{image.size[1]} mode {image.mode}'
    recovered = first['pixels'].x
    pixels = (recovered.reshape(8, 8) * 16).clip(0, 255).astype('uint8')
    figures['pixels_match'] = bool(np.array_equal(pixels, np.asarray(image)))
    figures['encoders'] = db.show('encoder')

    # a model, trained and evaluated inside the database
    from sklearn.svm import SVC

    model = superduper(SVC(gamma=0.001), identifier='digit-classifier', preprocess=_image_to_vector)
    model.fit(X='img', y='label', db=db, select=coll.find({'_fold': 'train'}))
    report = model.predict(X='img', db=db, select=coll.find({'_fold': 'valid'}))
    valid = list(db.execute(coll.find({'_fold': 'valid'})))
    correct = sum(d['_outputs']['img']['digit-classifier'] == d['label'] for d in valid)
    figures['accuracy'] = correct / max(1, len(valid))
    figures['predicted'] = report.computed

    table = RichTable(title='What is in the database now')
    table.add_column('check')
    table.add_column('result')
    table.add_row('digits stored', f'{n} rows in {figures["insert_seconds"]:.2f} s')
    table.add_row("count({'_fold': 'train'}) / valid", f'{figures["train"]} / {figures["valid"]}')
    table.add_row("find({'label': 3, '_fold': 'valid'}).limit(5)", f'{figures["threes_found"]} documents')
    table.add_row("find_one({'label': 7})['img'].x", figures['image'])
    table.add_row('image pixels == stored vector', str(figures['pixels_match']))
    table.add_row("db.show('encoder')", ', '.join(figures['encoders']))
    table.add_row(
        'SVC fit on train, predict on valid',
        f'{figures["predicted"]} outputs written back, accuracy {figures["accuracy"]:.3f}',
    )
    console.print(table)
    db.close()
    return figures
