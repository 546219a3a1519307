"""A find on a fold (``find({'_fold': 'valid'})``) against a plain find of the same table.

The fold is not a column: it is computed from each row's key (see docs/concepts.md, "Folds"),
so a find on it must not read rows one by one or in another, slower plan. Prints the best of
``--runs`` runs of each, in seconds, and the fold's time over the plain find's (a table of
``--n`` rows; the data is inserted before the clock starts).

    python benchmarks/folds.py --n 20000 --backends sqlite mongodb
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from superduperdb import CFG, Collection, superduper


def best_of(runs: int, db, query) -> tuple[float, int]:
    best, n = float('inf'), 0
    for _ in range(runs):
        start = time.perf_counter()
        n = len(db.execute(query).to_list())
        best = min(best, time.perf_counter() - start)
    return best, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=20000)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--backends', nargs='+', default=['sqlite', 'mongodb'])
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    print(f'N = {args.n} rows; best of {args.runs} runs')
    print(f'{"backend":10} {"plain s":>8} {"train s":>8} {"valid s":>8} {"ratio":>6}')
    with CFG.override(artifact_store=f'filesystem://{tmp}/artifacts'):
        for backend in args.backends:
            uri = (
                f'sqlite:///{tmp}/folds.sqlite'
                if backend == 'sqlite'
                else f'mongomock://folds_{uuid.uuid4().hex[:6]}'
            )
            with superduper(uri) as db:
                coll = Collection(f'folds_{uuid.uuid4().hex[:8]}')
                db.execute(coll.insert_many([{'n': i} for i in range(args.n)]))
                best_of(1, db, coll.find({'_fold': 'valid'}))  # first uses (statements compiled) untimed
                plain, everything = best_of(args.runs, db, coll.find())
                train, n_train = best_of(args.runs, db, coll.find({'_fold': 'train'}))
                valid, n_valid = best_of(args.runs, db, coll.find({'_fold': 'valid'}))
                assert everything == n_train + n_valid == args.n
                ratio = max(train, valid) / plain
                print(f'{backend:10} {plain:8.3f} {train:8.3f} {valid:8.3f} {ratio:6.2f}')


if __name__ == '__main__':
    main()
