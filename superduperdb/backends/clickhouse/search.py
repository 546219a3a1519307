"""Exact vector search inside ClickHouse: its distance functions over the stored vectors.

An output table stores each vector as its raw bytes (the array encoder's), which
``reinterpret(output, 'Array(Float32)')`` reads as an array without a copy per value in
Python; ``cosineDistance``, ``L2Distance`` and ``dotProduct`` rank them, and ``ORDER BY ...
LIMIT n`` keeps the best, in one scan that also applies the query's filter (the rows of the
source table it selects, as a subquery on the key). Scores are the in-memory engine's:
cosine similarity (a zero vector scores 0), dot product, euclidean distance.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

#: ClickHouse's array type of the stored vectors, by numpy dtype
_ARRAYS = {'float32': 'Array(Float32)', 'float64': 'Array(Float64)'}


def search_statement(
    t: sa.Table,
    o: sa.Table,
    where: Any,
    query: list[float],
    n: int,
    *,
    measure: str,
    version: int,
    dtype: str,
) -> sa.Select[Any] | None:
    """The SELECT of ``(key, score)`` best first (None: a dtype or a key this cannot search)."""
    kind = _ARRAYS.get(dtype)
    if kind is None or len(t.primary_key.columns) != 1:
        return None
    pk = next(iter(t.primary_key.columns))
    width = len(query) * (4 if dtype == 'float32' else 8)
    vectors = sa.func.reinterpret(sa.func.assumeNotNull(o.c.output), sa.literal_column(f"'{kind}'"))
    given = sa.bindparam('sddb_query', query, type_=sa.types.NullType())
    if measure == 'cosine':  # a zero vector: NaN in ClickHouse, similarity 0 in the engines
        distance = sa.func.ifNotFinite(sa.func.cosineDistance(vectors, given), 1.0)
        score, order = 1.0 - distance, distance.asc()
    elif measure == 'l2':
        distance = sa.func.L2Distance(vectors, given)
        score, order = distance, distance.asc()
    else:
        score = sa.func.dotProduct(vectors, given)
        order = score.desc()
    stmt = sa.select(o.c['_id'], score.label('sddb_score')).where(
        o.c['_version'] == version, o.c.output.is_not(None), sa.func.length(o.c.output) == width
    )
    if where is not None:
        stmt = stmt.where(o.c['_id'].in_(sa.select(pk).where(where)))
    return stmt.order_by(order, o.c['_id']).limit(n)
