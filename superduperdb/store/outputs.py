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
import logging
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import OUTPUTS, Document, Encodable
from superduperdb.base.exceptions import (
    BackendError,
    ConnectionFailed,
    EncodingError,
    QueryError,
)
from superduperdb.components.keyword_index import WORDS
from superduperdb.store import encoding

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

_SCALARS = frozenset({int, float, str, bool})
_COLUMNS = ('_id', 'output', '_version', '_input_hash')  # an output table's columns, in row order
_SECOND = operator.itemgetter(1)
_FIRST = operator.itemgetter(0)
#: the Python types each kind of output column takes (None always)
_FITS: dict[str, frozenset[type]] = {
    'int': frozenset({int, bool, type(None)}),
    'float': frozenset({float, int, type(None)}),
    'str': frozenset({str, type(None)}),
    'bool': frozenset({bool, type(None)}),
    'bytes': frozenset({bytes, type(None)}),
    'json': frozenset({dict, list, tuple, str, int, float, bool, type(None)}),
}


#: floats a database cannot store as they are, by backend name
def _maybe_non_finite(values: Sequence[Any], types: set[type]) -> bool:
    """Whether a float in ``values`` (of the ``types``) may be NaN or infinite (docs/concepts.md,
    "Values").

    One C-level sum over the floats: NaN and infinities propagate into it. A sum that
    overflows from finite floats says "maybe"; the rows are then checked one by one.
    """
    if types == {float}:  # the common case: no filtering pass
        return not math.isfinite(sum(values))
    return not math.isfinite(sum(v for v in values if type(v) is float))


def output_table(table: str, key: str, model: str) -> str:
    digest = hashlib.sha1(f'{table}\x00{key}\x00{model}'.encode()).hexdigest()[:16]
    return f'_superduper_out_{digest}'


#: ``{source id: fingerprint of its input as stored now}`` of the given source rows (rows gone
#: left out): how a conditional write reads the inputs its outputs were computed from
InputsNow = Callable[[Sequence[Any]], dict[Any, str]]


@dataclass
class Stored:
    """What :meth:`Outputs.write_if_current` did with each row it was given."""

    #: rows whose output could not be encoded or stored: ``{source id: error}``
    failed: dict[Any, Exception] = field(default_factory=dict)
    #: rows not stored: their input changed after their output was computed (the job of the
    #: new input stores its own)
    superseded: list[Any] = field(default_factory=list)
    #: rows stored, then taken back: their input changed while they were written (compute them
    #: again from the new input)
    withdrawn: list[Any] = field(default_factory=list)


class Outputs:
    """Writes, reads and deletes model outputs for one Datalayer."""

    def __init__(self, db: Datalayer) -> None:
        self.db = db
        #: outputs written or deleted through this object so far (a figure kept from before,
        #: such as a status comparison, is out of date once it moved)
        self.generation = 0

    def register(self, table: str, key: str, model: str) -> str:
        out = output_table(table, key, model)
        self.db.metadata.register_output(out, table, key, model)  # the table comes with the first write
        self.db.databackend.label_output(out, table, key, model)  # a lake's say which key and model
        return out

    def fingerprints(self, out: str, ids: Sequence[Any]) -> dict[Any, tuple[int, str]]:
        """``{source id: (model version, input fingerprint)}`` of outputs already stored."""
        found: dict[Any, tuple[int, str]] = {}
        if not ids:
            return found
        backend = self.db.databackend
        where = {'_id': {'$in': list(ids)}}
        if backend.capabilities.column_reads:  # column-wise, no dict per row
            # one page holds them all (a full page would cost a second query to see it was the last)
            for cols in backend.find_columns(
                out, where, ['_version', '_input_hash'], chunk_size=len(ids) + 1
            ):
                found.update(zip(cols['_id'], zip(map(int, cols['_version']), cols['_input_hash'])))
            return found
        for chunk in backend.find(out, where, projection={'_version': 1, '_input_hash': 1}):
            for row in chunk:
                found[row['_id']] = (int(row['_version']), row['_input_hash'])
        return found

    def fingerprints_of_chunk(
        self, out: str, ids: Sequence[Any], *, ordered: bool
    ) -> dict[Any, tuple[int, str]]:
        """:meth:`fingerprints` of a chunk of source ids. ``ordered``: the ids are a run of keys
        in the database's key order (a SQL chunk read in key order), so the outputs between the
        first and the last are read by that range, a fraction of the time of a 1000-key ``IN``
        list; ids the range did not find (no output, or an output table that orders its keys
        otherwise) are looked up by key."""
        if not ids or not ordered or not self.db.databackend.capabilities.column_reads:
            return self.fingerprints(out, ids)
        found: dict[Any, tuple[int, str]] = {}
        where = {'_id': {'$gte': ids[0], '$lte': ids[-1]}}
        for cols in self.db.databackend.find_columns(  # type: ignore[attr-defined]
            out, where, ['_version', '_input_hash'], chunk_size=len(ids) + 1
        ):
            found.update(zip(cols['_id'], zip(map(int, cols['_version']), cols['_input_hash'])))
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self.fingerprints(out, missing))
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
        isolate: bool = False,
        encoder: BaseEncoder | None = None,
    ) -> dict[Any, Exception]:
        """Store ``(source id, output, model version, fingerprint)`` rows.

        ``replace``: the ids among them that have outputs already (None: look them up).
        ``encoder``: the outputs are already the bytes this encoder stores for them (SQL
        backends; see ``encoding.encode_column``), written as they are.
        ``isolate``: a row whose output cannot be encoded or stored does not stop the others;
        it comes back in ``{source id: error}`` and every other row is stored. Otherwise the
        first such error is raised (after the other rows were stored).

        One type per output table: the first stored output fixes it (its encoder, e.g. a
        numpy array's dtype and shape, or its plain type; a first batch mixing ints and floats
        makes it float). A later output of another type is a failed row, as is an output that
        cannot be encoded (a ``set``, an object without an encoder) and a NaN on a database
        that cannot store one (SQLite, MySQL/MariaDB; infinities too on MySQL/MariaDB).
        """
        if not rows:
            return {}
        self.generation += 1
        backend = self.db.databackend
        ids = [r[0] for r in rows]
        if replace is None:
            replace = list(self.fingerprints(out, ids))
        if replace:  # a row whose new output fails keeps no stale one
            backend.delete(out, {'_id': {'$in': list(replace)}}, many=True)
        if backend.self_describing:
            failed = self._write_documents(table, key, model, out, rows)
        else:
            new = not backend.has_table(out)
            failed = self._write_rows(out, rows, encoder)
            if new and _has_views(backend) and backend.has_table(out):  # a readable view beside it
                from superduperdb.backends.sql.views import create_output_view

                found = self.db.encoders_of(out).get('output')  # as written just now
                column = None if found is None else found.identifier
                create_output_view(backend, table, key, model, out, encoder=column)  # type: ignore[arg-type]
        if failed:
            failed = self._unless_stored_meanwhile(out, rows, failed)
        if failed and not isolate:
            raise next(iter(failed.values()))
        return failed

    def write_if_current(
        self,
        table: str,
        key: str,
        model: str,
        out: str,
        rows: Sequence[tuple[Any, Any, int, str]],
        *,
        inputs: InputsNow,
        replace: Sequence[Any] | None = None,
        encoder: BaseEncoder | None = None,
    ) -> Stored:
        """Store ``(source id, output, model version, fingerprint)`` rows whose source row's input
        still has that fingerprint: a write conditional on what its output was computed from.

        Two jobs for one row (the row updated while the job of its previous value ran) race;
        written unconditionally, the slower one, computed from the older value, replaced the
        newer output and the row stayed stale, counted as current. Here:

        - a row without a stored output is inserted: the output table's key lets one writer
          in. A row whose insert meets another writer (that output's key in the way) has its
          input read again (``inputs``): still the one computed from, it replaces that output
          (an older one); changed, it is not stored (:attr:`Stored.superseded`: the job of the
          newer input stores its own), and in neither case is it a failure;
        - a row replacing an output (``replace``: the ids that had one; None: look them up) has
          its input read again before: changed, it is not stored;
        - every replaced row has its input read again after: changed in between (the write
          raced with an update), its output is taken back if it is still the one written, and
          the row comes back in :attr:`Stored.withdrawn` to be computed again from the new input.

        So a backfill (nothing stored) reads nothing more; rows that replace outputs cost two
        reads of their input columns (nothing decoded). On MongoDB, whose outputs are set
        inside the source documents (no key to stop a second writer), every row is checked
        as a replacing one. Rows whose output cannot be stored are isolated as with
        ``write(isolate=True)``. Append-only backends (a lake) write as :meth:`write`: their
        inputs never change. ``encoder``: as :meth:`write`'s.
        """
        result = Stored()
        backend = self.db.databackend
        if not rows or backend.append_only:
            result.failed = self.write(
                table, key, model, out, rows, replace=replace, isolate=True, encoder=encoder
            )
            return result
        ids = [r[0] for r in rows]
        replacing = set(self.fingerprints(out, ids) if replace is None else replace)
        if backend.self_describing:
            replacing.update(ids)
        rows, result.superseded = _still_current(rows, replacing, inputs)
        failed = self.write(
            table,
            key,
            model,
            out,
            rows,
            replace=[r[0] for r in rows if r[0] in replacing],
            isolate=True,
            encoder=encoder,
        )
        conflicts = _maybe_met_another_writer(failed)
        if conflicts:  # another writer's output in the way: replace it if ours is current
            for row_id in conflicts:
                del failed[row_id]
            retry, superseded = _still_current([r for r in rows if r[0] in conflicts], set(conflicts), inputs)
            result.superseded += superseded
            failed.update(
                self.write(
                    table,
                    key,
                    model,
                    out,
                    retry,
                    replace=[r[0] for r in retry],
                    isolate=True,
                    encoder=encoder,
                )
            )
            replacing.update(r[0] for r in retry)
        result.failed = failed
        replaced = [r for r in rows if r[0] in replacing and r[0] not in failed]
        if replaced:
            result.withdrawn = self._withdraw_if_changed(out, replaced, inputs)
        return result

    def _withdraw_if_changed(
        self, out: str, written: Sequence[tuple[Any, Any, int, str]], inputs: InputsNow
    ) -> list[Any]:
        """The rows of ``written`` whose input changed while they were written, their outputs
        deleted again where they are still the ones written (a newer one stays)."""
        after = inputs([r[0] for r in written])
        moved = [r for r in written if after.get(r[0]) != r[3]]
        backend = self.db.databackend
        self.generation += bool(moved)
        for row_id, _, version, fp in moved:  # rare (a race of milliseconds): one delete each
            backend.delete(out, {'_id': row_id, '_version': version, '_input_hash': fp}, many=False)
        if moved:
            logger.debug(
                '%d output(s) of %s withdrawn: their inputs changed as they were written', len(moved), out
            )
        return [r[0] for r in moved]

    def _unless_stored_meanwhile(
        self, out: str, rows: Sequence[tuple[Any, Any, int, str]], failed: dict[Any, Exception]
    ) -> dict[Any, Exception]:
        """Leave out of ``failed`` the rows another process stored the same output for meanwhile.

        Two processes that run one watcher's backfill at once (replicas of an application that
        each ``db.add`` it at start-up) compute the same outputs; the second insert of a row
        hits the first one's key. The row is up to date, not failed: same model version, same
        input fingerprint. A different stored output stays a failure here (see
        :meth:`write_if_current`, which replaces it when its own input is current).
        """
        mine = {r[0]: (r[2], r[3]) for r in rows if r[0] in failed}
        try:
            stored = self.fingerprints(out, list(mine)) if self.db.databackend.has_table(out) else {}
        except _ROW_ERRORS:
            return failed
        return {row_id: exc for row_id, exc in failed.items() if stored.get(row_id) != mine.get(row_id)}

    def views(self, *, create: bool = False) -> dict[str, str | None]:
        """``{output table: its readable SQL view, or None}`` (SQL databases; {} on MongoDB).

        ``create=True`` first makes the views missing (of outputs stored before views were
        made), remakes MariaDB/MySQL views of versions before 2026-12 read-only, and views of
        versions that selected every column of the table (tying them all to the view) with the
        columns they show: see :mod:`superduperdb.backends.sql.views` for their names and columns.
        """
        if self.db.databackend.self_describing or not _has_views(self.db.databackend):
            return {}
        from superduperdb.backends.sql import views

        backend: Any = self.db.databackend  # a SQLBackend
        found: dict[str, str | None] = {}
        for record in self.db.metadata.all_outputs():
            out = record['_id']
            if not backend.has_table(out):
                continue
            named = views.output_views(backend, out)
            if create:  # also remakes a view of an earlier version (see the docstring)
                encoder = self.db.metadata.column_encoders(out).get('output', (None, 0))[0]
                made = views.create_output_view(
                    backend, record['table_name'], record['key'], record['model'], out, encoder=encoder
                )
                named = [made] if made else []
            found[out] = named[0] if named else None
        return found

    def _write_documents(
        self, table: str, key: str, model: str, out: str, rows: Sequence[tuple[Any, Any, int, str]]
    ) -> dict[Any, Exception]:
        """MongoDB: the value inside the source document, version and fingerprint in ``out``."""
        backend = self.db.databackend
        failed: dict[Any, Exception] = {}
        register = self.db.register_encoder
        outputs = [{'output': value} for _, value, _, _ in rows]
        values: list[dict[str, Any] | None]
        try:  # the whole batch at once; one by one only to find the rows that cannot be encoded
            values = list(encoding.encode_documents(outputs, self_describing=True, register=register)[0])
        except EncodingError:
            values = []
            for (row_id, *_), output in zip(rows, outputs):
                try:
                    values.append(
                        encoding.encode_documents([output], self_describing=True, register=register)[0][0]
                    )
                except EncodingError as exc:
                    failed[row_id] = EncodingError(f'The output for row {row_id!r} cannot be stored: {exc}')
                    values.append(None)
        path = f'{OUTPUTS}.{_escape(key)}.{_escape(model)}'
        encoded = [(r, v['output']) for r, v in zip(rows, values) if v is not None]

        def store(part: Sequence[tuple[tuple[Any, Any, int, str], Any]]) -> None:
            backend.set_fields(table, [(r[0], {path: v}) for r, v in part])  # type: ignore[attr-defined]
            backend.insert(
                out, [{'_id': r[0], '_version': r[2], '_input_hash': r[3]} for r, _ in part], new_columns=True
            )

        failed.update(_isolating(store, encoded, lambda item: item[0][0]))
        return failed

    def _write_rows(
        self, out: str, rows: Sequence[tuple[Any, Any, int, str]], encoder: BaseEncoder | None = None
    ) -> dict[Any, Exception]:
        """SQL: rows of the output table, in bulk; one by one only to find the rows that fail.
        ``encoder``: the outputs are the bytes it stores (see :meth:`write`)."""
        backend = self.db.databackend
        failed: dict[Any, Exception] = {}
        kind = self._stored_kind(out)
        new_table = kind is None
        if encoder is not None:
            return self._write_encoded(out, self._stored_as(out, rows, kind, encoder, failed), failed)
        if new_table:
            kind = _first_kind([r[1] for r in rows])
        rows = self._storable(out, rows, kind, failed)
        if not rows:
            return failed
        plain = _SCALARS.issuperset(map(type, map(_SECOND, rows)))  # numbers and strings: no encoding
        if plain and backend.capabilities.bulk_rows:
            if new_table:
                self._create(out, rows, kind)
            if backend.has_table(out):

                def store(part: Sequence[tuple[Any, Any, int, str]]) -> None:
                    if not backend.insert_rows(out, _COLUMNS, part):  # a column missing: the general lane
                        docs = [dict(zip(_COLUMNS, row)) for row in part]
                        backend.insert(out, docs, new_columns=True)

                failed.update(_isolating(store, rows, _FIRST))
                return failed
        return self._write_encoded(out, self._encoded(out, rows, failed), failed)

    def _write_encoded(
        self, out: str, encoded: list[tuple[Any, Any, int, str]], failed: dict[Any, Exception]
    ) -> dict[Any, Exception]:
        """Rows whose outputs are encoded (bytes, or JSON-able values), in bulk where they can be."""
        backend = self.db.databackend

        def insert(part: Sequence[tuple[Any, Any, int, str]]) -> None:
            backend.insert(out, [dict(zip(_COLUMNS, row)) for row in part], new_columns=True)

        if encoded and not backend.has_table(out):
            self.db.will_create(out)  # as db.execute(insert) does: later writes may add columns
            failed.update(_isolating(insert, encoded[:1], _FIRST))  # the first row makes the table
            encoded = encoded[1:]
        if encoded and backend.capabilities.bulk_rows and all(type(r[1]) is bytes for r in encoded):
            # encoded values (vectors): plain tuples into the table as it stands
            def store_encoded(part: Sequence[tuple[Any, Any, int, str]]) -> None:
                if not backend.insert_rows(out, _COLUMNS, part):  # no table, or a column missing
                    insert(part)

            failed.update(_isolating(store_encoded, encoded, _FIRST))
            return failed
        failed.update(_isolating(insert, encoded, _FIRST))
        return failed

    def _storable(
        self,
        out: str,
        rows: Sequence[tuple[Any, Any, int, str]],
        kind: str | None,
        failed: dict[Any, Exception],
    ) -> Sequence[tuple[Any, Any, int, str]]:
        """The rows whose output fits the output table's type ``kind``; the others go to ``failed``."""
        values = [r[1] for r in rows]
        types = set(map(type, values))
        fits = _FITS.get(kind or '', frozenset())
        check_floats = float in types and _maybe_non_finite(values, types)
        if kind is not None and types <= fits and not check_floats:
            return rows  # the common case: one set operation for the whole batch
        encoder = kind[len('encoder:') :] if kind and kind.startswith('encoder:') else None
        if encoder is not None and types <= _ENCODABLE and _encoders_of(values) <= {encoder}:
            return rows  # values of the table's encoder (a model's vectors): one set for the batch
        kept = []
        for row in rows:
            value = row[1]
            problem = None
            if value is None:
                pass
            elif encoder is not None:
                if not isinstance(value, Encodable) or value.encoder.identifier != encoder:
                    problem = f'a {_describe(value)}, but its outputs are stored as {encoder!r} values'
            elif kind is not None and type(value) not in fits:
                problem = f'a {_describe(value)}, but its outputs are stored as {kind} values'
            elif check_floats and type(value) is float and not math.isfinite(value):
                problem = (
                    f'{value}, which not every database stores (SQLite would read it back as None; '
                    'MySQL/MariaDB refuses it), so no backend takes it. Return None for a missing '
                    'value, or a finite number'
                )
            if problem is None:
                kept.append(row)
            else:
                failed[row[0]] = _unfit(out, row[0], problem)
        return kept

    def _stored_as(
        self,
        out: str,
        rows: Sequence[tuple[Any, Any, int, str]],
        kind: str | None,
        encoder: BaseEncoder,
        failed: dict[Any, Exception],
    ) -> list[tuple[Any, Any, int, str]]:
        """Rows whose outputs are the bytes ``encoder`` stores: all of them where the output table
        holds that encoder's values or is new (the encoder registered for its column), else
        none, each in ``failed`` as :meth:`_storable` fails a value of another type."""
        if kind is not None and kind != f'encoder:{encoder.identifier}':
            stored = repr(kind[len('encoder:') :]) if kind.startswith('encoder:') else kind
            for row in rows:
                problem = f'a {encoder.identifier!r} value, but its outputs are stored as {stored} values'
                failed[row[0]] = _unfit(out, row[0], problem)
            return []
        self.db.check_column_encoders(out, {'output': self.db.register_encoder(encoder)})
        return list(rows)

    def _encoded(
        self, out: str, rows: Sequence[tuple[Any, Any, int, str]], failed: dict[Any, Exception]
    ) -> list[tuple[Any, Any, int, str]]:
        """The rows (in ``_COLUMNS`` order), their outputs encoded: one encoder per column
        (registered). Values of one encoder (a model's vectors) are encoded as a batch."""
        register = self.db.register_encoder
        encoders: dict[str, Any] = {}

        def known(encoder: Any) -> Any:
            if encoder.identifier not in encoders:
                encoders[encoder.identifier] = register(encoder)
            return encoders[encoder.identifier]

        first = rows[0][1] if rows else None
        if type(first) is Encodable and all(
            type(r[1]) is Encodable and r[1].encoder is first.encoder for r in rows
        ):
            column = known(first.encoder)
            try:
                stored = column.to_stored_many([r[1].x for r in rows])
            except Exception:  # a value its encoder refuses: row by row below, that row fails alone
                logger.debug('encoding %d outputs at once failed; encoding them one by one', len(rows))
            else:
                self.db.check_column_encoders(out, {'output': column})
                return [(r[0], data, r[2], r[3]) for r, data in zip(rows, stored)]
        docs = []
        column = None
        for row_id, value, version, fp in rows:
            try:
                if isinstance(value, Encodable):
                    column = known(value.encoder)
                    stored = column.to_stored(value.x)
                elif _plain_texts(value):  # a chunker's chunk keys: stored as they are
                    stored = value
                else:
                    stored = encoding.encode_documents(
                        [{'output': value}], self_describing=False, register=known
                    )[0][0]['output']
            except Exception as exc:  # an encoder's own error, or a value no encoder takes
                failed[row_id] = EncodingError(
                    f'The output for row {row_id!r} cannot be stored: {type(exc).__name__}: {exc}'
                )
                continue
            docs.append((row_id, stored, version, fp))
        if column is not None:
            self.db.check_column_encoders(out, {'output': column})
        return docs

    def _stored_kind(self, out: str) -> str | None:
        """The type of the outputs stored in ``out`` (see :func:`_first_kind`); None: no table yet."""
        encoder = self.db.encoders_of(out).get('output')
        if encoder is not None:
            return f'encoder:{encoder.identifier}'
        return self.db.databackend.column_kind(out, 'output')

    def _create(self, out: str, rows: Sequence[tuple[Any, Any, int, str]], kind: str | None) -> None:
        """Create an output table for plain outputs of type ``kind``."""
        columns = {
            '_id': _kind(rows[0][0]),
            'output': kind or 'json',
            '_version': 'int',
            '_input_hash': 'str',
        }
        self.db.will_create(out)  # as db.execute(insert) does: later writes may add columns
        self.db.databackend.create_table(out, columns)

    def records(self, table: str) -> list[dict[str, Any]]:
        """The output tables of ``table`` that ``attach`` reads (none on MongoDB): not a keyword
        index's copy of the text, which a reader has already."""
        if self.db.databackend.self_describing:
            return []
        return [r for r in self.db.metadata.outputs_of(table) if r['model'] != WORDS]

    def attach(
        self,
        table: str,
        docs: list[Document],
        records: list[dict[str, Any]] | None = None,
        *,
        found: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        """Put each row's outputs under ``doc['_outputs'][key][model]``.

        ``records``: from :meth:`records`, looked up once per query rather than per chunk.
        ``found``: output rows (``_id``, ``output``, stored values) already read, by output
        table (see ``SQLBackend.get_many_joined``); the other tables are read here.
        On MongoDB the outputs are already there, with dots in keys escaped; unescape them.
        """
        if self.db.databackend.self_describing:
            for doc in docs:
                if OUTPUTS in doc and isinstance(doc[OUTPUTS], dict):
                    outputs = {
                        _unescape(k): {_unescape(m): v for m, v in per_model.items() if m != WORDS}
                        for k, per_model in doc[OUTPUTS].items()
                    }
                    doc[OUTPUTS] = {k: v for k, v in outputs.items() if v}
                    if not doc[OUTPUTS]:
                        del doc[OUTPUTS]
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
        from superduperdb.query.objects import Collection

        for record in records:
            stored = (found or {}).get(record['_id'])
            if stored is None:  # a prebuilt lookup by key, where the backend has one
                stored = self.db.databackend.get_many(record['_id'], ids, ('_id', 'output'))
            if stored is not None:
                rows: Iterable[dict[str, Any]] = self.db.decode_chunk(record['_id'], stored, attach=False)
            else:
                rows = self.db.read(
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
        self.generation += 1
        for record in self.db.metadata.outputs_of(table):
            self.db.databackend.delete(record['_id'], {'_id': {'$in': list(ids)}}, many=True)

    def delete_all(self, out: str) -> None:
        """Every output of output table ``out`` goes (its source table was truncated or dropped)."""
        self.generation += 1
        self.db.databackend.delete(out, {}, many=True)


def _unfit(out: str, row_id: Any, problem: str) -> EncodingError:
    return EncodingError(
        f'The output for row {row_id!r} is {problem}. The first stored output fixes the type '
        f"of a model's outputs ({out}); return one type (one dtype and shape) for every row, "
        'or give the model an encoder that takes them all.'
    )


def _plain_texts(value: Any) -> bool:
    """Whether ``value`` is a list of ASCII strings without NUL: what encoding would store unchanged."""
    if type(value) is not list or not set(map(type, value)) <= _STR:
        return False
    joined = ''.join(value)  # one scan of all the texts at C speed
    return joined.isascii() and '\x00' not in joined


_STR = frozenset({str})
_ENCODABLE = frozenset({Encodable, type(None)})


def _encoders_of(values: Sequence[Any]) -> set[str]:
    """The identifiers of the encoders of ``values`` (Encodables or None)."""
    return {v.encoder.identifier for v in values if v is not None}


def _maybe_met_another_writer(failed: dict[Any, Exception]) -> list[Any]:
    """The failed rows whose write may have met another writer rather than failed on its own
    (an output that cannot be encoded): an insert that hit another output's key, even where
    that output has gone since (another replace between its delete and its insert). Tried once
    more; a row that fails for its own reason fails again."""
    return [row_id for row_id, exc in failed.items() if not isinstance(exc, EncodingError)]


def _still_current(
    rows: Sequence[tuple[Any, Any, int, str]], checked: set[Any], inputs: InputsNow
) -> tuple[list[tuple[Any, Any, int, str]], list[Any]]:
    """``(rows to store, ids superseded)``: the rows among ``checked`` whose input changed since
    their output was computed (or whose row is gone) are not to be stored; one read of the
    inputs of ``checked``, none when it is empty."""
    ask = [r[0] for r in rows if r[0] in checked]
    if not ask:
        return list(rows), []
    now = inputs(ask)
    superseded = [r[0] for r in rows if r[0] in checked and now.get(r[0]) != r[3]]
    if not superseded:
        return list(rows), []
    gone = set(superseded)
    return [r for r in rows if r[0] not in gone], superseded


def _has_views(backend: Any) -> bool:
    """Whether output tables get readable SQL views (SQL databases; a lake's outputs are Parquet)."""
    return bool(backend.capabilities.views)


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


def _first_kind(values: Sequence[Any]) -> str | None:
    """The type the first storable output gives a new output table: ``encoder:<identifier>``
    or a column type; a batch of numbers mixing ints and floats makes it float. None: no
    output says (all None, or none storable)."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, Encodable):
            return f'encoder:{value.encoder.identifier}'
        kind = {bool: 'bool', int: 'int', float: 'float', str: 'str', bytes: 'bytes'}.get(type(value))
        if kind is None and isinstance(value, (dict, list, tuple)):
            kind = 'json'
        if kind == 'int' and float in set(map(type, values)):
            return 'float'
        if kind is not None:
            return kind
    return None


def _describe(value: Any) -> str:
    if isinstance(value, Encodable):
        return f'{value.encoder.identifier!r} value'
    return type(value).__name__


#: errors of a bulk write that one row can cause (not a lost connection: that stops the write)
_ROW_ERRORS = (BackendError, EncodingError, QueryError)

T = Any


def _isolating(
    store: Callable[[Sequence[T]], Any], items: Sequence[T], key: Callable[[T], Any]
) -> dict[Any, Exception]:
    """``store(items)`` in one bulk write; if it fails, halves are tried (and so on) to find the
    items that fail on their own: ``{key(item): error}``. Extra writes only when something fails
    (about 2 log2(n) per failing item); a lost connection is raised, not blamed on the rows."""
    if not items:
        return {}
    try:
        store(items)
        return {}
    except _ROW_ERRORS as exc:
        if isinstance(exc, ConnectionFailed) or getattr(exc.__cause__, 'connection_invalidated', False):
            raise
        if len(items) == 1:
            return {key(items[0]): exc}
        logger.debug('a bulk write of %d outputs failed; finding the rows that fail', len(items))
    mid = len(items) // 2
    return {**_isolating(store, items[:mid], key), **_isolating(store, items[mid:], key)}
