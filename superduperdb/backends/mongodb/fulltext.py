"""MongoDB's text index over a keyword index's texts (a real server; mongomock has no ``$text``).

On MongoDB a keyword index's text copy is in each document, under ``_outputs.<key>.<model>``
(see :mod:`superduperdb.store.outputs`), so the text index is on the user's collection, over
that field: MongoDB keeps it in step with every write. A collection has at most one text
index: where the user has one already, adding the keyword index fails with a message that
says so (``engine='bm25'`` then works). ``language`` is the index's ``default_language``
(MongoDB's stemming and stop words). Scores are MongoDB's ``textScore``.

Written against pymongo; this machine has no MongoDB server, so it runs where
``SUPERDUPERDB_TEST_MONGODB_URI`` names one (tests/test_keywords.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from superduperdb.base.exceptions import ComponentError

_NAMES = 'danish dutch english finnish french german hungarian italian norwegian portuguese'
LANGUAGES = frozenset([*_NAMES.split(' '), 'romanian', 'russian', 'spanish', 'swedish', 'turkish', 'none'])


class MongoFullText:
    name = 'mongodb text index'

    def __init__(self, database: Any, language: str) -> None:
        self.database = database
        self.language = language

    def check_language(self) -> None:
        if self.language not in LANGUAGES:
            raise ComponentError(
                f'MongoDB text indexes have no language {self.language!r}; KeywordIndex language= '
                f'is one of {", ".join(sorted(LANGUAGES))}.'
            )

    def _field(self, source: tuple[str, str] | None) -> tuple[Any, str]:
        assert source is not None, 'on MongoDB the texts are in the documents: pass source='
        table, field = source
        return self.database[table], field

    def _name(self, field: str) -> str:
        return f'superduperdb_text_{field}'[:120]

    def ensure(self, out: str, source: tuple[str, str] | None = None) -> None:
        import pymongo
        import pymongo.errors

        collection, field = self._field(source)
        try:
            collection.create_index(
                [(field, pymongo.TEXT)], name=self._name(field), default_language=self.language
            )
        except pymongo.errors.OperationFailure as exc:
            if 'text index' in str(exc).lower():
                raise ComponentError(
                    f'Collection {collection.name!r} has a text index already (MongoDB allows one): '
                    "use KeywordIndex(..., engine='bm25')."
                ) from exc
            raise

    def search(
        self,
        out: str,
        text: str,
        n: int,
        version: int,
        within: Sequence[Any] | None = None,
        source: tuple[str, str] | None = None,
    ) -> list[tuple[Any, float]]:
        collection, _ = self._field(source)
        flt: dict[str, Any] = {'$text': {'$search': text}}
        if within is not None:
            flt['_id'] = {'$in': list(within)}
        score = {'score': {'$meta': 'textScore'}}
        found = collection.find(flt, score).sort([('score', {'$meta': 'textScore'})]).limit(n)
        return [(doc['_id'], float(doc['score'])) for doc in found]

    def check(self, out: str, source: tuple[str, str] | None = None) -> dict[str, int]:
        collection, field = self._field(source)
        indexed = collection.count_documents({field: {'$type': 'string'}})
        return {'indexed': indexed, 'drift': 0, 'repaired': 0}

    def drop(self, out: str, source: tuple[str, str] | None = None) -> None:
        collection, field = self._field(source)
        if self._name(field) in collection.index_information():
            collection.drop_index(self._name(field))
