"""What the server's routes share: the database, its locks, the request guards, and the
checks every route applies to what a request sends (:class:`ServerState`).

``create_app`` builds one :class:`ServerState` per app and hands it to each module of
:mod:`superduperdb.server.routes`; nothing there closes over ``create_app``'s locals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from superduperdb.base.exceptions import ComponentError, ComponentNotFound, QueryError
from superduperdb.server import wire
from superduperdb.server.admission import WriteLock
from superduperdb.server.auth import Access, Role, require_write
from superduperdb.server.cursors import Cursors
from superduperdb.server.errors import Forbidden
from superduperdb.server.idempotency import IdempotencyKeys
from superduperdb.server.schemas import FindQuery


def guards(access: Access) -> tuple[Callable[..., Role], Callable[..., None]]:
    """The two request guards (FastAPI dependencies) over ``access``: ``authenticated`` (any
    token or session: the request's :class:`Role`, also kept in ``request.state.role``) and
    ``writer`` (a role that may write, else 403)."""
    bearer = HTTPBearer(auto_error=False, description='CFG.server.token (or CFG.server.read_token)')

    def authenticated(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> Role:
        role = access.role_of_request(
            request.method, request.headers.get('authorization'), request.cookies, request.headers
        )
        request.state.role = role
        return role

    def writer(role: Role = Depends(authenticated)) -> None:  # noqa: B008
        require_write(role, 'this request')

    return authenticated, writer


@dataclasses.dataclass
class ServerState:
    """One app's shared state (see ``create_app`` for how each part is chosen).

    ``reads``: the block a read runs in (the write lock itself where ``db`` cannot be shared
    between threads, else nothing); ``writes``: the write lock. ``uploads``:
    ``CFG.server.allow_artifact_upload``. ``authenticated``: the guard that gives a request's
    role; ``guarded``/``writers``/``docs_guard``: the route dependencies for any token, a
    token that may write, and the docs (none where they are public).
    """

    db: Any
    uploads: bool
    reads: Any
    writes: WriteLock
    keys: IdempotencyKeys
    cursors: Cursors
    access: Access
    authenticated: Callable[..., Role]
    guarded: list[Any]
    writers: list[Any]
    docs_guard: list[Any]

    def lookup(self, identifier: str, version: int | None) -> Any:
        """The encoder a request's value names, refused (403) where it may run code when it
        decodes and this server does not decode such values."""
        with self.reads:  # the metadata store, in turn where the database cannot be shared
            encoder = self.db.encoder(identifier, version)
        path = f'{type(encoder).__module__}:{type(encoder).__qualname__}'
        if encoder.runs_code and not self.uploads:  # see BaseEncoder.runs_code
            raise Forbidden(
                f'Encoder {identifier!r} ({path}) may unpickle what it decodes, and this server does not '
                'decode such values from requests. Use a numpy, pillow, audio or torch encoder, or set '
                'CFG.server.allow_artifact_upload on the server.'
            )
        return encoder

    def stored_model(self, identifier: str, version: int | None, *, cached: bool = True) -> Any:
        """The server's own copy of a model (requests never send one)."""
        from superduperdb.components.model import Model

        try:
            model = self.db.load('model', identifier, version, cached=cached)
        except ComponentNotFound as exc:
            raise ComponentNotFound(
                f'{exc} Models run on the server from its own copy: add {identifier!r} on the server '
                '(from a process with direct database access), or enable '
                'CFG.server.allow_artifact_upload there and client.add(model).',
                type_id='model',
                identifier=identifier,
                version=version,
            ) from exc
        if not isinstance(model, Model):
            raise ComponentError(f'{identifier!r} is not a model.')
        return model

    def safe(self, encoder: Any) -> bool:
        """Whether this server may decode values of ``encoder`` from a request."""
        return self.uploads or not encoder.runs_code

    def request_query(self, data: dict[str, Any]) -> Any:
        """A query from its JSON form, raw bytes refused where a column has an encoder."""
        q = wire.query_from_json(data, self.lookup)
        check_raw_bytes(self.db, q, self.safe)
        return q

    def find_query(self, select: FindQuery) -> Any:
        """The rows a model runs over: a plain find (no search: ``like``, ``match``, ``fuse``, ``rerank``)."""
        from superduperdb.query.objects import Find, FindOne

        searching = any(part is not None for part in (select.like, select.match, select.fuse, select.rerank))
        if select.kind != 'find' or searching:  # refused before anything is decoded
            raise QueryError(
                'A model runs over a plain find query (kind "find", no "like", "match", "fuse" or '
                '"rerank"), e.g. coll.find().'
            )
        q = self.request_query(select.model_dump(exclude_none=True))
        assert isinstance(q, Find) and not isinstance(q, FindOne) and not q.searches
        return q

    def decoded_query(self, query: Any) -> Any:
        """A request's query with its values decoded and encoded again for storing, all before
        any lock is taken (decoders are bounded, but a write lock held while decoding would
        make every write wait); a ``like`` is decoded only if its index exists, and a search
        runs only if every index and model it names exists (:func:`check_search`)."""
        if getattr(query, 'like', None) is not None or getattr(query, 'match', None) is not None:
            with self.reads:
                check_search(self.db, query)
        q = wire.query_from_json(query.model_dump(exclude_none=True), self.lookup)
        encode_ahead(q)
        return q


def check_search(db: Any, query: Any) -> None:
    """What a search request names exists, checked before anything is decoded or run: its
    vector index (:func:`check_index`), its keyword index (:func:`check_keyword_index`), its
    reranker (a stored model); and ``fuse`` has both parts to fuse (QueryError)."""
    if query.like is not None:
        check_index(db, query.table, query.like.index)
    if query.match is not None:
        check_keyword_index(db, query.table, query.match.index)
    if query.fuse is not None and (query.like is None or query.match is None):
        raise QueryError(
            '"fuse" ranks the results of "like" (a vector search) and "match" (a keyword search) '
            'together: send both, or leave "fuse" out.'
        )
    if query.rerank is not None and not db.metadata.versions('model', query.rerank.model):
        raise ComponentNotFound(
            f'"rerank" names model {query.rerank.model!r}, which is not stored on this server. '
            'Add the reranker as a model there (see GET /components?type_id=model for those stored).',
            type_id='model',
            identifier=query.rerank.model,
        )


def check_keyword_index(db: Any, table: str, index: str) -> None:
    """A ``match`` names an existing keyword index of its table (or of its chunks)."""
    from superduperdb.store.chunks import parent_of

    found = db.keywords.get(index)  # ComponentNotFound (404) naming those there are
    if found.table != table and parent_of(db, table, found.table) is None:
        raise QueryError(f'Keyword index {index!r} indexes table {found.table!r}, not {table!r}.')


def check_index(db: Any, table: str, index: str) -> None:
    """A ``like`` names an existing vector index of its table (ComponentNotFound, QueryError),
    checked before its value is decoded: a request decodes only what it needs. An index of
    the chunks of ``table`` (:mod:`superduperdb.store.chunks`) searches ``table`` too."""
    from superduperdb.store.chunks import parent_of

    found = db.vectors.get(index)
    if found.table != table and parent_of(db, table, found.table) is None:
        raise QueryError(f'Vector index {index!r} indexes table {found.table!r}, not {table!r}.')


def encode_ahead(q: Any) -> None:
    """Encode the values an insert or update will store now (``Encodable.data``), so that the
    write, under the server's write lock, only writes bytes."""
    from superduperdb.base.document import Document
    from superduperdb.query.objects import Insert, Update

    parts: list[Any]
    if isinstance(q, Insert):
        parts = list(q.documents)
    elif isinstance(q, Update):
        parts = [part for part in q.update.values() if isinstance(part, dict)]
    else:
        return
    for part in parts:
        for _, value in Document(part).encodables():
            encoder: Any = value.encoder
            if not value.pending and value.data is None and not encoder.runs_code:
                value.data = encoder.encode(value.x)


def check_raw_bytes(db: Any, q: Any, safe: Callable[[Any], bool]) -> None:
    """Refuse raw bytes from a request in a SQL column that has an encoder (or gets one in
    the same request): a later read would decode them with it, and an encoder that
    unpickles would run what they hold."""
    from superduperdb.base.document import Encodable
    from superduperdb.base.exceptions import EncodingError
    from superduperdb.query.objects import Insert, Update

    if db.databackend.self_describing:  # raw bytes stay raw bytes there
        return
    if isinstance(q, Insert):
        documents = list(q.documents)
    elif isinstance(q, Update) and isinstance(q.update.get('$set'), dict):
        documents = [q.update['$set']]
    else:
        return
    raw = {k for doc in documents for k, v in doc.items() if isinstance(v, (bytes, bytearray, memoryview))}
    if not raw:
        return
    encoders = dict(db.encoders_of(q.table))
    for doc in documents:
        for k, v in doc.items():
            if isinstance(v, Encodable):
                encoders.setdefault(k, v.encoder)
    for column in sorted(raw):
        encoder = encoders.get(column)
        if encoder is None:
            continue
        if not safe(encoder):
            raise Forbidden(
                f'Column {q.table}.{column} holds values of encoder {encoder.identifier!r}, which may '
                'unpickle what it reads, so this server does not take raw bytes for it.'
            )
        raise EncodingError(
            f'Column {q.table}.{column} holds values of encoder {encoder.identifier!r}: send them as '
            f'{{"_content": {{"encoder": "{encoder.identifier}", "bytes": base64}}}}, not raw bytes.'
        )
