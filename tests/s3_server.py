"""A real S3-compatible server for the tests: moto's server on 127.0.0.1, in a thread.

``start()`` (idempotent, one per process) starts it on a free port and points the standard
AWS variables at it (``AWS_ENDPOINT_URL``, test credentials), which s3fs, boto3, deltalake and
LanceDB all read; ``bucket(name)`` makes a bucket there. Nothing is mocked in the clients:
they speak HTTP to the server as they would to any S3.
"""

from __future__ import annotations

import os
from typing import Any

from superduperdb.server.spawn import free_port

_SERVER: dict[str, Any] = {}


def start() -> str:
    """The endpoint URL of the running server (started on first call)."""
    if 'endpoint' in _SERVER:
        return str(_SERVER['endpoint'])
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=port, verbose=False)
    server.start()
    endpoint = f'http://127.0.0.1:{port}'
    os.environ.update(
        {
            'AWS_ENDPOINT_URL': endpoint,
            'AWS_ACCESS_KEY_ID': 'testing',
            'AWS_SECRET_ACCESS_KEY': 'testing',
            'AWS_DEFAULT_REGION': 'us-east-1',
            'AWS_ALLOW_HTTP': 'true',
        }
    )
    _SERVER.update(server=server, endpoint=endpoint)
    return endpoint


def bucket(name: str) -> str:
    """Make bucket ``name`` on the server (if new); its ``s3://`` URL."""
    import boto3

    client = boto3.client('s3', endpoint_url=start())
    existing = {b['Name'] for b in client.list_buckets().get('Buckets', [])}
    if name not in existing:
        client.create_bucket(Bucket=name)
    return f's3://{name}'


def stop() -> None:
    server = _SERVER.pop('server', None)
    _SERVER.clear()
    if server is not None:
        server.stop()
