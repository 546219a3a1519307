"""Where model outputs live, and how they come back with their rows.

Every (table, key, model) has an *output table* ``_superduper_out_<hash>`` in
the data database, keyed by the source row's primary key, holding the
output, the model version and a fingerprint of the exact input. On SQL the
user's table is never altered: ``find`` attaches the outputs to each chunk of
rows (one query per output table per chunk). On MongoDB the value is also set
inside the document under ``_outputs.<key>.<model>``, where MongoDB users
expect it; the output collection then keeps only the version and fingerprint.

Reading is the same everywhere: ``doc['_outputs'][key][model]``.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import xxhash

from superduperdb.base.document import Document, Encodable
from superduperdb.datalayer import encoding

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

OUTPUTS = '_outputs'
_SCALARS = frozenset({int, float, str, bool})
_COLUMNS = ('_id', 'output', '_version', '_input_hash')  # an output table's columns, in row order
_SECOND = operator.itemgetter(1)


def output_table(table: str, key: str, model: str) -> str:
    digest = hashlib.sha1(f'{table}\x00{key}\x00{model}'.encode()).hexdigest()[:16]
    return f'_superduper_out_{digest}'


class Outputs:
    """Writes, reads and deletes model outputs for one Datalayer."""

    def __init__(self, db: Datalayer) -> None:
        self.db = db

    def register(self, table: str, key: str, model: str) -> str:
        out = output_table(table, key, model)
        self.db.metadata.register_output(out, table, key, model)  # the table comes with the first write
        return out

    def fingerprints(self, out: str, ids: Sequence[Any]) -> dict[Any, tuple[int, str]]:
        """``{source id: (model version, input fingerprint)}`` of outputs already stored."""
        found: dict[Any, tuple[int, str]] = {}
        if not ids:
            return found
        backend = self.db.databackend
        where = {'_id': {'$in': list(ids)}}
        find_columns = getattr(backend, 'find_columns', None)
        if find_columns is not None:  # SQL: column-wise, no dict per row
            # one page holds them all (a full page would cost a second query to see it was the last)
            for cols in find_columns(out, where, ['_version', '_input_hash'], chunk_size=len(ids) + 1):
                found.update(zip(cols['_id'], zip(map(int, cols['_version']), cols['_input_hash'])))
            return found
        for chunk in backend.find(out, where, projection={'_version': 1, '_input_hash': 1}):
            for row in chunk:
                found[row['_id']] = (int(row['_version']), row['_input_hash'])
        return found

    def write(
        self,
        table: str,
        key: str,
        model: str,
        out: str,
        rows: Sequence[tuple[Any, Any, int, str]],
        *,
        replace: Sequence[Any] | None = None,
    ) -> None:
        """Store ``(source id, output, model version, fingerprint)`` rows.

        ``replace``: the ids among them that have outputs already (None: look them up).
        """
        if not rows:
            return
        backend = self.db.databackend
        ids = [r[0] for r in rows]
        if replace is None:
            replace = list(self.fingerprints(out, ids))
        if replace:
            backend.delete(out, {'_id': {'$in': list(replace)}}, many=True)
        if backend.self_describing:
            docs = [{'_id': i, '_version': v, '_input_hash': h} for i, _, v, h in rows]
            values, _ = encoding.encode_documents(
                [{'output': value} for _, value, _, _ in rows],
                self_describing=True,
                register=self.db._register_encoder,
            )
            path = f'{OUTPUTS}.{_escape(key)}.{_escape(model)}'
            backend.set_fields(table, [(i, {path: v['output']}) for i, v in zip(ids, values)])  # type: ignore[attr-defined]
            backend.insert(out, docs, new_columns=True)
            return
        new = not backend.has_table(out)
        self._write_sql(out, rows)
        if new:  # a readable view beside the new output table (psql, BI tools)
            from superduperdb.datalayer.sql.views import create_output_view

            encoder = self.db.metadata.column_encoders(out).get('output', (None, 0))[0]
            create_output_view(backend, table, key, model, out, encoder=encoder)  # type: ignore[arg-type]

    def views(self, *, create: bool = False) -> dict[str, str | None]:
        """``{output table: its readable SQL view, or None}`` (SQL databases; {} on MongoDB).

        ``create=True`` first makes the views missing (of outputs stored before views were
        made): see :mod:`superduperdb.datalayer.sql.views` for their names and columns.
        """
        if self.db.databackend.self_describing:
            return {}
        from superduperdb.datalayer.sql import views

        backend: Any = self.db.databackend  # a SQLBackend
        found: dict[str, str | None] = {}
        for record in self.db.metadata.all_outputs():
            out = record['_id']
            if not backend.has_table(out):
                continue
            named = views.output_views(backend, out)
            if not named and create:
                encoder = self.db.metadata.column_encoders(out).get('output', (None, 0))[0]
                made = views.create_output_view(
                    backend, record['table_name'], record['key'], record['model'], out, encoder=encoder
                )
                named = [made] if made else []
            found[out] = named[0] if named else None
        return found

    def _write_sql(self, out: str, rows: Sequence[tuple[Any, Any, int, str]]) -> None:
        backend = self.db.databackend
        plain = _SCALARS.issuperset(map(type, map(_SECOND, rows)))  # numbers and strings need no encoding
        insert_rows = getattr(backend, 'insert_rows', None)
        if plain and insert_rows is not None:
            if not backend.has_table(out):
                self._create(out, rows)
            if insert_rows(out, _COLUMNS, rows):
                return  # the rows as they are, straight to the driver's bulk insert
        if plain:
            docs = [{'_id': i, 'output': value, '_version': v, '_input_hash': h} for i, value, v, h in rows]
            created = not backend.has_table(out)
            backend.insert(out, docs, new_columns=True)
            if created:  # as db.execute(insert) records it: later writes may add columns
                self.db.metadata.record_created_table(out)
        else:
            from superduperdb.datalayer.query import Collection

            docs = [
                Document({'_id': i, 'output': value, '_version': v, '_input_hash': h})
                for i, value, v, h in rows
            ]
            self.db.execute(Collection(out).insert_many(docs))

    def _create(self, out: str, rows: Sequence[tuple[Any, Any, int, str]]) -> None:
        """Create an output table for plain outputs, typed as a first insert of ``rows`` would."""
        output = next((r[1] for r in rows if r[1] is not None), None)
        columns = {'_id': _kind(rows[0][0]), 'output': _kind(output), '_version': 'int', '_input_hash': 'str'}
        self.db.databackend.create_table(out, columns)
        self.db.metadata.record_created_table(out)  # as db.execute(insert) does: later writes may add columns

    def records(self, table: str) -> list[dict[str, Any]]:
        """The output tables of ``table`` that ``attach`` reads (none on MongoDB)."""
        return [] if self.db.databackend.self_describing else self.db.metadata.outputs_of(table)

    def attach(self, table: str, docs: list[Document], records: list[dict[str, Any]] | None = None) -> None:
        """Put each row's outputs under ``doc['_outputs'][key][model]``.

        ``records``: from :meth:`records`, looked up once per query rather than per chunk.
        On MongoDB the outputs are already there, with dots in keys escaped; unescape them.
        """
        if self.db.databackend.self_describing:
            for doc in docs:
                if OUTPUTS in doc and isinstance(doc[OUTPUTS], dict):
                    doc[OUTPUTS] = {
                        _unescape(k): {_unescape(m): v for m, v in per_model.items()}
                        for k, per_model in doc[OUTPUTS].items()
                    }
            return
        if records is None:
            records = self.records(table)
        if not docs or not records:
            return
        pk = self.db.databackend.primary_key(table)
        by_id = {doc.get(pk): doc for doc in docs}
        ids = [i for i in by_id if i is not None]
        if not ids:
            return
        from superduperdb.datalayer.query import Collection

        for record in records:
            rows = self.db._find(
                Collection(record['_id']).find({'_id': {'$in': ids}}, {'output': 1}), attach=False
            )
            for row in rows:
                target = by_id.get(row['_id'])
                if target is not None:
                    target.setdefault(OUTPUTS, {}).setdefault(record['key'], {})[record['model']] = row.get(
                        'output'
                    )

    def delete_for(self, table: str, ids: Sequence[Any]) -> None:
        """Deleted rows lose their outputs (on MongoDB the values went with the document)."""
        if not ids:
            return
        for record in self.db.metadata.outputs_of(table):
            self.db.databackend.delete(record['_id'], {'_id': {'$in': list(ids)}}, many=True)


# MongoDB paths cannot hold '.', and keys like 'meta.text' or models like 'v1.5' do:
# store them with a full-width dot, the usual MongoDB escape, and restore on read.
_DOT = '\uff0e'


def _escape(name: str) -> str:
    return name.replace('.', _DOT)


def _unescape(name: str) -> str:
    return name.replace(_DOT, '.')


def _kind(value: Any) -> str:
    """The column type (COLUMN_TYPES) a plain value needs; None: JSON, which takes any later value."""
    if value is None:
        return 'json'
    return {bool: 'bool', int: 'int', float: 'float'}.get(type(value), 'str')


def fingerprint_column(values: Sequence[Any]) -> list[str]:
    """:func:`fingerprint` of each value, quick for a column of encoded bytes."""
    if set(map(type, values)) == {bytes}:  # the common case, without a Python-level loop
        return list(map(xxhash.xxh3_128_hexdigest, values))
    return [fingerprint(v) for v in values]


def fingerprint(value: Any) -> str:
    """A stable hash of a stored (encoded) value: equal inputs, equal fingerprints.

    XXH3-128: made to tell whether an input changed, not to stand against someone forging
    a collision (who would only keep their own row's output stale), and ~17x faster than
    SHA-1 on a 1.5 KB vector; it is what lets predict keep up with a hand-written loop.
    """
    if type(value) is bytes:  # the common case (an encoded column), without the walk
        return xxhash.xxh3_128_hexdigest(value)
    h = xxhash.xxh3_128()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        h.update(b'b%d:' % len(value))
        h.update(value)
    elif isinstance(value, str):
        data = value.encode()
        h.update(b's%d:' % len(data))
        h.update(data)
    elif isinstance(value, dict):
        h.update(b'{')
        for k in sorted(value):
            _feed(h, str(k))
            _feed(h, value[k])
        h.update(b'}')
    elif isinstance(value, (list, tuple)):
        h.update(b'[')
        for v in value:
            _feed(h, v)
        h.update(b']')
    elif isinstance(value, Encodable):
        _feed(h, value.encode())
    else:
        h.update(json.dumps(value, default=str).encode())
