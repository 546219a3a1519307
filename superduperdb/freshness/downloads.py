"""Download jobs: fetch the data that references (``encoder(uri=...)``) point to, and store it.

Inserting documents whose top-level fields hold references starts a ``download``
job for those rows; watchers of those fields run after it. The job fetches the
URIs concurrently (``CFG.downloads.workers`` threads, retries with backoff,
a timeout each), checks that the encoder can decode each result, and writes
the bytes in place of the references in bulk. A URI that fails is recorded in
the failure ledger (``db.metadata.failures('download:<table>.<field>')``) with
its error, and never fails the rest of its batch; the row keeps its reference,
so running the job again retries it.

The fetch policy is part of the job: the process that accepts the write stores its own
policy (a server's: no files outside ``server.file_roots``) in the job's arguments, and the
job is fetched under that policy wherever and whenever it runs (a re-run of a failed start,
an orphan picked up by change capture, a Dask worker), narrowed further by the running
process's own policy, never widened by it. A job without a stored policy (written before
policies were stored, or forged) runs under the narrowest: no files, no private addresses.

>>> stored = policy_args(references.FetchPolicy(file_roots=('/srv/data',)))
>>> stored['file_roots']
['/srv/data']
>>> job_policy({'policy': stored}, here=references.FetchPolicy()).file_roots
('/srv/data',)
>>> job_policy({}, here=references.FetchPolicy()).file_roots
()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from superduperdb.base import references
from superduperdb.base.config import CFG
from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import EncodingError
from superduperdb.components.encoder import refused_reference
from superduperdb.jobs.job import Job, job_log, report_progress, task
from superduperdb.store.encoding import CONTENT

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.datalayer.datalayer import Datalayer


def pending_fields(documents: Sequence[dict[str, Any]]) -> list[str]:
    """Top-level fields holding references not downloaded yet, in first-seen order."""
    fields: dict[str, None] = {}
    for doc in documents:
        for key, value in doc.items():
            if isinstance(value, Encodable) and value.pending:
                fields[key] = None
    return list(fields)


def ledger(table: str, field: str) -> str:
    """The failure-ledger name of downloads into ``table.field``."""
    return f'download:{table}.{field}'


@task('download')
def download(db: Datalayer, job: Job) -> dict[str, int]:
    """Args: ``table``, ``fields``, ``ids`` (the rows to look at), ``policy`` (the fetch policy
    of the process that made the job: :func:`policy_args`)."""
    table, fields, ids = job.args['table'], job.args['fields'], job.args['ids']
    backend = db.databackend
    pk = backend.primary_key(table)
    progress = report_progress(db, job)
    policy = job_policy(job.args, here=process_policy(db))
    job_log('fetching under the policy stored with the job: %s', describe(policy))
    done = downloaded = failed = 0
    for lo in range(0, len(ids), db.chunk_size):
        chunk = ids[lo : lo + db.chunk_size]
        todo = []  # (row id, field, uri, encoder)
        failures: dict[str, dict[Any, BaseException]] = {}
        for rows in backend.find(table, {pk: {'$in': chunk}}, projection={f: 1 for f in fields}):
            for row in rows:
                for field in fields:
                    found = _reference(db, table, field, row.get(field))
                    if found is None:
                        continue
                    if found[1].runs_code:  # a reference another program wrote: never fetched
                        failures.setdefault(field, {})[row[pk]] = EncodingError(refused_reference(found[1]))
                    else:
                        todo.append((row[pk], field, *found))
        results = _fetch_all([uri for _, _, uri, _ in todo], policy)
        updates: list[tuple[Any, dict[str, Any]]] = []
        succeeded: dict[str, list[Any]] = {}
        for (row_id, field, uri, encoder), result in zip(todo, results):
            if isinstance(result, bytes):
                try:
                    encoder.decode(result)  # what cannot be decoded is not stored
                except Exception as exc:
                    result = EncodingError(f'{uri}: not a valid {encoder.identifier} value ({exc})')
            if isinstance(result, BaseException):
                failures.setdefault(field, {})[row_id] = result
                continue
            updates.append((row_id, {field: _stored(backend.self_describing, encoder, result)}))
            succeeded.setdefault(field, []).append(row_id)
        backend.set_fields(table, updates)
        for field, errors in failures.items():
            db.metadata.record_failures(ledger(table, field), errors)
            for row_id, error in list(errors.items())[:5]:
                job_log('download failed for %s=%r: %s', pk, row_id, error)
        for field, ok in succeeded.items():
            db.metadata.clear_failures(ledger(table, field), ok)
        downloaded += len(updates)
        failed += sum(len(e) for e in failures.values())
        done += len(chunk)
        progress(done, len(ids))
    job_log('%s.%s: %d downloaded, %d failed', table, ','.join(fields), downloaded, failed)
    return {'downloaded': downloaded, 'failed': failed}


def _reference(db: Datalayer, table: str, field: str, value: Any) -> tuple[str, BaseEncoder] | None:
    """``(uri, encoder)`` if a stored value is a reference not downloaded yet."""
    if isinstance(value, dict):
        content = value.get(CONTENT)
        if isinstance(content, dict) and 'bytes' not in content and content.get('uri'):
            return content['uri'], db.encoder(content['encoder'], content.get('version'))
        return None
    uri = references.from_stored(value)
    if uri is None:
        return None
    return uri, db.encoders_of(table)[field]


def _stored(self_describing: bool, encoder: BaseEncoder, data: bytes) -> Any:
    if not self_describing:
        return data  # a SQL column of this encoder holds the raw bytes
    return {CONTENT: {'encoder': encoder.identifier, 'version': encoder.version, 'bytes': data}}


def _fetch_all(uris: list[str], policy: references.FetchPolicy) -> list[bytes | BaseException]:
    """Each URI's bytes, or the error that stopped it; fetched concurrently under ``policy``."""
    if not uris:
        return []
    settings = CFG.downloads

    def one(uri: str) -> bytes | BaseException:
        try:
            return references.fetch(uri, timeout=settings.timeout, retries=settings.retries, policy=policy)
        except Exception as exc:  # recorded per URI: one bad URI never fails its batch
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.workers, len(uris)))) as pool:
        return list(pool.map(one, uris))


# ----- the policy a job carries ------------------------------------------------------------
def process_policy(db: Datalayer) -> references.FetchPolicy:
    """The fetch policy of this process for ``db``: a server's (``db.serving``: ``file://``
    only under ``server.file_roots``) or a local program's (``downloads.file_roots``)."""
    return references.FetchPolicy.from_config(server=db.serving)


def policy_args(policy: references.FetchPolicy) -> dict[str, Any]:
    """``policy`` as JSON, for a job's arguments (see :func:`job_policy`)."""
    return {
        'schemes': sorted(policy.schemes),
        'file_roots': None if policy.file_roots is None else list(policy.file_roots),
        'allow_private_addresses': policy.allow_private_addresses,
        'max_bytes': policy.max_bytes,
    }


def job_policy(args: dict[str, Any], *, here: references.FetchPolicy) -> references.FetchPolicy:
    """The policy a download job runs under: the one stored in its ``args`` when it was made,
    narrowed by ``here`` (this process's); the narrowest (no files, no private addresses) if it
    has none or a malformed one. A job record may be old or forged: it can only narrow."""
    stored = _from_args(args.get('policy'))
    if stored is None:
        return references.FetchPolicy(
            schemes=here.schemes, file_roots=(), allow_private_addresses=False, max_bytes=here.max_bytes
        )
    return references.FetchPolicy(
        schemes=stored.schemes & here.schemes,
        file_roots=_common_roots(stored.file_roots, here.file_roots),
        allow_private_addresses=stored.allow_private_addresses and here.allow_private_addresses,
        max_bytes=min(stored.max_bytes, here.max_bytes),
    )


def describe(policy: references.FetchPolicy) -> str:
    """One line for a job's log: what the policy lets the job fetch."""
    roots = 'any path' if policy.file_roots is None else ', '.join(policy.file_roots) or 'none'
    private = 'allowed' if policy.allow_private_addresses else 'refused'
    return (
        f'schemes {", ".join(sorted(policy.schemes)) or "none"}; file roots: {roots}; '
        f'private addresses {private}; at most {policy.max_bytes} bytes'
    )


def _from_args(data: Any) -> references.FetchPolicy | None:
    """A policy from its stored form, or None if ``data`` is not one (every field checked)."""
    if not isinstance(data, dict):
        return None
    schemes, roots = data.get('schemes'), data.get('file_roots')
    private, max_bytes = data.get('allow_private_addresses'), data.get('max_bytes')
    if not (isinstance(schemes, list) and all(isinstance(x, str) for x in schemes)):
        return None
    if not (roots is None or (isinstance(roots, list) and all(isinstance(x, str) and x for x in roots))):
        return None
    if not isinstance(private, bool) or isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        return None
    return references.FetchPolicy(
        schemes=frozenset(x.lower() for x in schemes),
        file_roots=None if roots is None else tuple(roots),
        allow_private_addresses=private,
        max_bytes=max(0, max_bytes),
    )


def _common_roots(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The paths under a root of ``a`` and a root of ``b`` (None: any path), as roots."""
    if a is None or b is None:
        return b if a is None else a
    found: list[str] = []
    for x in a:
        for y in b:
            inner = x if _under(x, y) else y if _under(y, x) else None
            if inner is not None and inner not in found:
                found.append(inner)
    return tuple(found)


def _under(path: str, root: str) -> bool:
    # as the fetch compares them: links followed (see references._read_file)
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == os.path.realpath(root)
