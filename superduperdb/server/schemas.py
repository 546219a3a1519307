"""The bodies the server's routes take: queries, components, model runs (pydantic models).

Their field descriptions are what the OpenAPI spec (``/docs``) shows; a query's fields are
the client's wire format (``Query.to_dict()``, see :mod:`superduperdb.server.wire`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

_TABLE: Any = Field(
    pattern=r'^[A-Za-z_][A-Za-z0-9_\-]{0,62}$',
    description="A table/collection name (superduperdb's own, _superduper*, are refused).",
)
_FILTER: Any = Field(default_factory=dict, description='A Mongo-style filter, e.g. {"price": {"$lt": 10}}.')


class LikeSpec(BaseModel):
    value: Any = Field(description='{"key": value} to encode with the index model, a vector, or {"_id": id}.')
    index: str = Field(description='The vector index (see GET /components?type_id=vector_index).')
    n: int = Field(10, ge=1)
    first: bool = Field(False, description='Search first, then filter (else filter, then search).')
    chunks: bool = Field(
        False, description='Over an index of chunks of this table: the n best chunks rather than their rows.'
    )


class MatchSpec(BaseModel):
    value: dict[str, str] = Field(description='{"field": "words"}, e.g. {"body": "error 0x80070005"}.')
    index: str = Field(description='The keyword index (see GET /components?type_id=keyword_index).')
    n: int = Field(10, ge=1)
    first: bool = Field(False, description='Search first, then filter (else filter, then search).')


class FuseSpec(BaseModel):
    method: Literal['rrf', 'weighted'] = Field('rrf', description='Reciprocal rank fusion, or weighted.')
    k: int = Field(60, ge=1, description='rrf: each part adds weight / (k + rank).')
    weights: dict[str, float] = Field(default_factory=dict, description='{"like": w, "match": w} (1 each).')
    n: int | None = Field(None, ge=1, description='Results kept (default: the larger n of the two parts).')


class RerankSpec(BaseModel):
    model: str = Field(description='A stored model scoring (query, text) pairs, such as a cross-encoder.')
    top: int = Field(50, ge=1, description='How many of the first results it scores again.')
    key: str | None = Field(None, description='The field it reads (default: the field searched).')
    n: int | None = Field(None, ge=1)


class FindQuery(BaseModel):
    kind: Literal['find', 'findone']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    projection: dict[str, int] | None = None
    sort: list[tuple[str, int]] = Field(default_factory=list, description='[[key, 1 or -1], ...]')
    limit: int | None = Field(None, ge=0, le=2**63 - 1)
    skip: int = Field(0, ge=0, le=2**63 - 1)
    like: LikeSpec | None = None
    match: MatchSpec | None = Field(None, description='A keyword search; with "like" too, the two are fused.')
    fuse: FuseSpec | None = Field(None, description='How "like" and "match" results are ranked together.')
    rerank: RerankSpec | None = None


class CountQuery(BaseModel):
    kind: Literal['count']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER


class InsertQuery(BaseModel):
    kind: Literal['insert']
    table: str = _TABLE
    documents: list[dict[str, Any]] = Field(description='Encoded values in the _content form.')


class UpdateQuery(BaseModel):
    kind: Literal['update']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    update: dict[str, Any] = Field(description='{"$set": {...}}, {"$unset": {...}} or {"$inc": {...}}.')
    many: bool = True


class DeleteQuery(BaseModel):
    kind: Literal['delete']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    many: bool = True


class ExecuteRequest(BaseModel):
    query: FindQuery | CountQuery | InsertQuery | UpdateQuery | DeleteQuery = Field(
        discriminator='kind', description="A query in its to_dict() form (the client's wire format)."
    )
    preview: bool = Field(False, description='Values as a browser shows them (find and findone only).')


class AddRequest(BaseModel):
    config: dict[str, Any] = Field(description="The component's to_config() JSON: {cls, params}.")
    artifacts: dict[str, str] = Field(
        default_factory=dict,
        description='Pickled artifacts, base64; accepted only with CFG.server.allow_artifact_upload.',
    )


class PredictRequest(BaseModel):
    values: list[Any] = Field(description='Inputs, as JSON (encoded values in the _content form).')
    version: int | None = None


_KEY: Any = Field(description='The input key, or several keys (a list).')
_SELECT: Any = Field(description='A find query (kind "find") in its to_dict() form: the rows to use.')
_VERSION: Any = Field(None, description='The stored model version (default: the latest).')


class PredictQueryRequest(BaseModel):
    key: str | list[str] = _KEY
    select: FindQuery = _SELECT
    version: int | None = _VERSION
    overwrite: bool = False
    features: dict[str, str] = Field(default_factory=dict)
    watch: bool = Field(False, description='Add a Watcher that keeps the outputs fresh; returns its job.')
    chunk_size: int | None = Field(None, ge=1, le=1_000_000)


class FitRequest(BaseModel):
    X: str | list[str] = _KEY
    y: str | None = Field(None, description='The target key (none for unsupervised models).')
    select: FindQuery = _SELECT
    validation_select: FindQuery | None = None
    version: int | None = _VERSION
    features: dict[str, str] = Field(default_factory=dict)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="JSON options for the model's fit.")


class EvaluateRequest(BaseModel):
    evaluation_set: str = Field(description='The evaluation set (an EvaluationSet component).')
    k: int = Field(10, ge=1, le=1000, description='Results per query that count.')
    filter: dict[str, Any] = Field(default_factory=dict, description='Search among the rows it matches.')
