"""What the API models of each watcher used, kept in the metadata store: totals of requests,
tokens, errors, 429s and cost, and a series of 10-second buckets (the last hour) for the
dashboard's plot of throughput against the rate limit.

Written by predict jobs chunk by chunk (a compare-and-swap of one record per watcher, so
jobs on several processes add up), read by ``db.status()``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superduperdb.store.metadata import MetadataStore

PREFIX = '_superduper_usage:'
BUCKET = 10.0  # seconds a point of the series covers
KEEP = 360  # points kept: an hour
TOTALS = ('requests', 'input_tokens', 'output_tokens', 'errors', 'rate_limited')


def add_usage(
    metadata: MetadataStore, watcher: str, usage: dict[str, Any], limits: dict[str, Any] | None = None
) -> None:
    """Add ``usage`` (see ``Model.take_usage``) to watcher ``watcher``'s record; ``limits``: the
    model's rate limits (requests, tokens, window), kept for the plot."""
    if not usage or not usage.get('requests'):
        return
    name = PREFIX + watcher
    metadata.install()
    bucket = math.floor(metadata.now() / BUCKET) * BUCKET
    while True:
        raw = metadata.position(name)
        record = _parse(raw)
        for key in TOTALS:
            record[key] = int(record.get(key, 0)) + int(usage.get(key) or 0)
        cost = usage.get('cost')
        record['cost'] = None if cost is None else float(record.get('cost') or 0.0) + float(cost)
        series = [p for p in record.get('series', []) if isinstance(p, list) and len(p) == 3]
        tokens = int(usage.get('input_tokens') or 0) + int(usage.get('output_tokens') or 0)
        if series and series[-1][0] == bucket:
            series[-1] = [bucket, series[-1][1] + int(usage['requests']), series[-1][2] + tokens]
        else:
            series.append([bucket, int(usage['requests']), tokens])
        record['series'] = series[-KEEP:]
        if limits:
            record['limits'] = limits
        if metadata.swap_position(name, raw, json.dumps(record, separators=(',', ':'))):
            return


def usage_of(metadata: MetadataStore, watcher: str, *, series: bool = False) -> dict[str, Any] | None:
    """Watcher ``watcher``'s usage (``series``: with the 10-second buckets), None if none."""
    raw = metadata.position(PREFIX + watcher)
    if raw is None:
        return None
    record = _parse(raw)
    if not series:
        record.pop('series', None)
    else:
        record['bucket_s'] = BUCKET
    return record


def _parse(raw: str | None) -> dict[str, Any]:
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}
