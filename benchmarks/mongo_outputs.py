"""MongoDB model outputs: a watcher backfill's writes, counted and timed, against a hand-written loop.

N documents ``{'text': ...}`` (inserted before the clock), a cheap model (the text's length)
attached with a watcher (``model.predict(X='text', ..., watch=True)``); its outputs go inside
each document under ``_outputs``. Counted: the write calls on the source collection (each is a
round trip on a real server). Hand-written: keyset pages of 1000 (``find`` sorted by ``_id``),
the lengths, one unordered bulk ``$set`` per page (pymongo ``bulk_write``; mongomock's own bulk,
whose ``bulk_write`` cannot take pymongo>=4.9's ``UpdateOne``).

On mongomock by default; on a server with ``--uri`` or ``SUPERDUPERDB_TEST_MONGODB_URI``:

    python benchmarks/mongo_outputs.py --n 2000 --repeat 3    # mongomock: each update scans
    python benchmarks/mongo_outputs.py --n 20000 --uri mongodb://localhost:27017
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

CHUNK = 1000
WRITES = ('update_one', 'update_many', 'bulk_write', 'initialize_unordered_bulk_op', 'insert_many')


def text_length(text: str) -> float:
    return float(len(text))


def texts(n: int) -> list[str]:
    words = ['red', 'green', 'blue', 'shoe', 'shirt', 'coat', 'fast', 'slow', 'river', 'city']
    return [f'doc {i} ' + ' '.join(words[(i * k) % len(words)] for k in (1, 3, 7)) for i in range(n)]


_COUNTED: dict[str, list[str]] = {}  # collection full name -> the write calls made on it


def count_writes(collection, calls: list[str]) -> None:
    """Record the write methods called on ``collection`` in ``calls`` (its class's own methods,
    wrapped once for counting; every call still runs them)."""
    _COUNTED[collection.full_name] = calls
    cls = type(collection)
    for name in WRITES:
        original = getattr(cls, name, None)
        if original is None or getattr(original, 'counted', False):
            continue

        def counted(self, *args, _name=name, _original=original, **kwargs):
            if self.full_name in _COUNTED:
                _COUNTED[self.full_name].append(_name)
            return _original(self, *args, **kwargs)

        counted.counted = True  # type: ignore[attr-defined]
        setattr(cls, name, counted)


def run_sddb(uri: str, n: int, round_: int) -> tuple[float, int]:
    from superduperdb import CFG, Collection, superduper

    name = f'bench_{uuid.uuid4().hex[:8]}'
    with CFG.override(artifact_store=f'filesystem:///tmp/{name}_artifacts'):
        db = superduper(f'mongomock://{name}' if uri.startswith('mongomock') else f'{uri.rstrip("/")}/{name}')
        try:
            coll = Collection('docs')
            db.execute(coll.insert_many([{'text': t} for t in texts(n)]))
            calls: list[str] = []
            count_writes(db.databackend.database['docs'], calls)
            model = superduper(text_length, identifier=f'length-{round_}')
            start = time.perf_counter()
            model.predict(X='text', db=db, select=coll.find(), watch=True)
            seconds = time.perf_counter() - start
            doc = db.execute(coll.find_one({}))
            assert doc['_outputs']['text'][model.identifier] == len(doc['text'])
            return seconds, len(calls)
        finally:
            database = db.databackend.database
            database.client.drop_database(database.name)
            db.close()


def run_hand(uri: str, n: int) -> tuple[float, int]:
    name = f'bench_{uuid.uuid4().hex[:8]}'
    if uri.startswith('mongomock'):
        import mongomock

        client = mongomock.MongoClient()
    else:
        import pymongo

        client = pymongo.MongoClient(uri)
    database = client[name]
    try:
        collection = database['docs']
        collection.insert_many([{'_id': uuid.uuid4().hex[:24], 'text': t} for t in texts(n)])
        calls: list[str] = []
        count_writes(collection, calls)
        start = time.perf_counter()
        last = ''
        while True:
            page = list(collection.find({'_id': {'$gt': last}}, {'text': 1}).sort('_id', 1).limit(CHUNK))
            if not page:
                break
            last = page[-1]['_id']
            updates = [(d['_id'], {'_outputs.text.length': text_length(d['text'])}) for d in page]
            if uri.startswith('mongomock'):
                bulk = collection.initialize_unordered_bulk_op()
                for i, fields in updates:
                    bulk.find({'_id': i}).update_one({'$set': fields})
                bulk.execute()
            else:
                from pymongo import UpdateOne

                collection.bulk_write([UpdateOne({'_id': i}, {'$set': f}) for i, f in updates], ordered=False)
        return time.perf_counter() - start, len(calls)
    finally:
        client.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=2000)
    parser.add_argument('--repeat', type=int, default=1, help='alternating runs; the fastest counts')
    parser.add_argument('--uri', default=os.environ.get('SUPERDUPERDB_TEST_MONGODB_URI') or 'mongomock://')
    args = parser.parse_args()
    hand, ours = [], []
    for round_ in range(args.repeat):
        hand.append(run_hand(args.uri, args.n))
        ours.append(run_sddb(args.uri, args.n, round_))
    (h, h_calls), (o, o_calls) = min(hand), min(ours)
    server = 'mongomock' if args.uri.startswith('mongomock') else 'server'
    load = '/'.join(f'{x:.1f}' for x in os.getloadavg())
    head = f'{"where":10} {"N":>8} {"hand s":>8} {"sddb s":>8} {"ratio":>6}'
    print(f'{head} {"hand writes":>12} {"sddb writes":>12}')
    print(
        f'{server:10} {args.n:>8,} {h:8.3f} {o:8.3f} {o / h:6.2f} {h_calls:>12} {o_calls:>12}   load {load}',
        flush=True,
    )


if __name__ == '__main__':
    main()
