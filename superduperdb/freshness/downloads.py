"""Download jobs: fetch the data that references (``encoder(uri=...)``) point to, and store it.

Inserting documents whose top-level fields hold references starts a ``download``
job for those rows; watchers of those fields run after it. The job fetches the
URIs concurrently (``CFG.downloads.workers`` threads, retries with backoff,
a timeout each), checks that the encoder can decode each result, and writes
the bytes in place of the references in bulk. A URI that fails is recorded in
the failure ledger (``db.metadata.failures('download:<table>.<field>')``) with
its error, and never fails the rest of its batch; the row keeps its reference,
so running the job again retries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from superduperdb.base import references
from superduperdb.base.config import CFG
from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import EncodingError
from superduperdb.datalayer.encoding import CONTENT
from superduperdb.jobs.job import Job, job_log, report_progress, task

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
    """Args: ``table``, ``fields``, ``ids`` (the rows to look at)."""
    table, fields, ids = job.args['table'], job.args['fields'], job.args['ids']
    backend = db.databackend
    pk = backend.primary_key(table)
    progress = report_progress(db, job)
    done = downloaded = failed = 0
    for lo in range(0, len(ids), db.chunk_size):
        chunk = ids[lo : lo + db.chunk_size]
        todo = []  # (row id, field, uri, encoder)
        for rows in backend.find(table, {pk: {'$in': chunk}}, projection={f: 1 for f in fields}):
            for row in rows:
                for field in fields:
                    found = _reference(db, table, field, row.get(field))
                    if found is not None:
                        todo.append((row[pk], field, *found))
        results = _fetch_all([uri for _, _, uri, _ in todo], server=job.args.get('policy') == 'server')
        updates: list[tuple[Any, dict[str, Any]]] = []
        failures: dict[str, dict[Any, BaseException]] = {}
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
            return content['uri'], db._encoder(content['encoder'], content.get('version'))
        return None
    uri = references.from_stored(value)
    if uri is None:
        return None
    return uri, db._columns_of(table)[field]


def _stored(self_describing: bool, encoder: BaseEncoder, data: bytes) -> Any:
    if not self_describing:
        return data  # a SQL column of this encoder holds the raw bytes
    return {CONTENT: {'encoder': encoder.identifier, 'version': encoder.version, 'bytes': data}}


def _fetch_all(uris: list[str], *, server: bool = False) -> list[bytes | BaseException]:
    """Each URI's bytes, or the error that stopped it; fetched concurrently under the fetch
    policy (the server's for jobs a server started: see docs/security.md)."""
    if not uris:
        return []
    settings = CFG.downloads
    policy = references.FetchPolicy.from_config(server=server)

    def one(uri: str) -> bytes | BaseException:
        try:
            return references.fetch(uri, timeout=settings.timeout, retries=settings.retries, policy=policy)
        except Exception as exc:  # recorded per URI: one bad URI never fails its batch
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.workers, len(uris)))) as pool:
        return list(pool.map(one, uris))
