"""Search that never drifts (issue 24): what ``like()`` returns is checked against the rows.

Each test reproduces a way the vector engine (a derived copy of the outputs) went apart
from its source, and compares what a user sees (search results, status) with the truth
(the rows and their stored outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from superduperdb import Collection, VectorIndex, Watcher
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel

COLOURS = ('red', 'blue', 'green', 'black')


def colour(text: str) -> np.ndarray:
    """A one-hot vector of a text's first word: exact scores, no model download."""
    v = np.zeros(len(COLOURS), dtype='float32')
    v[COLOURS.index(text.split()[0])] = 1
    return v


def _index(db: Any, table: str, name: str = 'colours') -> VectorIndex:
    model = FunctionModel('colour', object=colour, encoder=array('float32', len(COLOURS)))
    watcher = Watcher(model=model, key='text', select=Collection(table).find())
    return db.add(VectorIndex(name, indexing_watcher=watcher))


def _found(db: Any, table: str, text: str, n: int = 10, where: Any = None) -> list[tuple[str, float]]:
    q = Collection(table).like({'text': text}, 'colours', n=n).find(where or {})
    return [(d['text'], round(d['_score'], 3)) for d in db.execute(q)]


# ----- item 2: keys MongoDB made ------------------------------------------------------------------
@pytest.mark.parametrize('backend', [pytest.param('mongodb', marks=pytest.mark.mongodb)], indirect=True)
def test_search_finds_documents_with_objectid_and_integer_keys(db, table_name):
    """The seed's headline scenario: an existing collection whose documents the application
    inserted itself (ObjectId ``_id``s), or with integer ``_id``s."""
    from bson import ObjectId

    raw = db.databackend.database[table_name]
    oids = raw.insert_many([{'text': t} for t in ('red shoe', 'blue hat', 'green sock')]).inserted_ids
    assert all(isinstance(i, ObjectId) for i in oids)
    raw.insert_one({'_id': 7, 'text': 'black belt'})
    _index(db, table_name)
    (status,) = db.status()
    assert (status['rows'], status['current']) == (4, 4)
    assert _found(db, table_name, 'blue x', n=2)[0] == ('blue hat', 1.0)
    assert _found(db, table_name, 'black x', n=1) == [('black belt', 1.0)]
    filtered = _found(db, table_name, 'green x', n=1, where={'text': {'$ne': 'x'}})  # filter, then search
    assert filtered == [('green sock', 1.0)]
    # more like a row given by its ObjectId
    q = Collection(table_name).like({'_id': oids[0]}, 'colours', n=1).find()
    assert [d['text'] for d in db.execute(q)] == ['red shoe']
    # a change to an ObjectId document moves it in the index; a deleted one leaves it
    db.execute(Collection(table_name).update_one({'_id': oids[1]}, {'$set': {'text': 'red hat'}}))
    db.execute(Collection(table_name).delete_one({'_id': oids[2]}))
    assert sorted(_found(db, table_name, 'red x', n=2)) == [('red hat', 1.0), ('red shoe', 1.0)]
    assert _found(db, table_name, 'green x', n=1) != [('green sock', 1.0)]
    assert {t for t, _ in _found(db, table_name, 'red x')} == {'red shoe', 'red hat', 'black belt'}
