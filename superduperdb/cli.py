"""The ``superduperdb`` command line.

Commands: ``config`` (the effective configuration), ``info`` (versions, the
connected backend, registered components), ``jobs`` (recent jobs, or follow
one), ``status`` (freshness of each watcher), ``serve`` (the HTTP server), ``cdc`` (change capture for
writes made by other applications), ``demo`` (the product on the
embedded default database).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata as importlib_metadata
from typing import Any

import typer

app = typer.Typer(
    help='superduperdb: bring AI models to the database you already have.',
    no_args_is_help=True,
    add_completion=False,
)

_PACKAGES = (
    'sqlalchemy',
    'pydantic',
    'numpy',
    'psycopg',
    'pymysql',
    'duckdb',
    'duckdb-engine',
    'pymongo',
    'mongomock',
    'pillow',
    'torch',
    'scikit-learn',
    'sentence-transformers',
    'transformers',
    'openai',
    'lancedb',
    'dask',
    'distributed',
    'fastapi',
)


@app.command()
def config() -> None:
    """Print the effective configuration as JSON (defaults < file < env < code)."""
    from superduperdb.base.config import CFG, config_file

    settings = CFG.model_dump()
    if settings['server'].get('token'):
        settings['server']['token'] = '***'
    if settings['openai'].get('api_key'):
        settings['openai']['api_key'] = '***'
    path = config_file()
    typer.echo(json.dumps({'config_file': str(path) if path else None, **settings}, indent=2))


@app.command()
def info(
    uri: str = typer.Option(None, '--uri', help='Database to inspect (default: CFG.data_backend).'),
) -> None:
    """Print versions, the connected backend and the registered components."""
    from superduperdb import __version__, superduper
    from superduperdb.base.exceptions import SuperDuperError

    typer.echo(f'superduperdb {__version__} on Python {platform.python_version()} ({sys.platform})')
    versions = []
    for name in _PACKAGES:
        try:
            versions.append(f'{name}=={importlib_metadata.version(name)}')
        except importlib_metadata.PackageNotFoundError:
            continue
    typer.echo('installed: ' + ', '.join(versions))
    try:
        db = superduper(uri)
    except SuperDuperError as exc:
        typer.echo(f'database: not connected ({exc})', err=True)
        raise typer.Exit(1) from exc
    typer.echo(f'database: {db.databackend.describe()}')
    typer.echo(f'artifacts: {db.artifact_store.describe()}')
    shown = db.show()
    if not shown:
        typer.echo('components: none registered')
    for type_id, identifiers in shown.items():
        for identifier in identifiers:
            versions_ = db.show(type_id, identifier)
            typer.echo(f'{type_id}: {identifier} (versions {", ".join(map(str, versions_))})')
    db.close()


@app.command()
def jobs(
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    status: str = typer.Option(None, '--status', help='Only jobs with this status.'),
    limit: int = typer.Option(20, '--limit', help='How many of the newest jobs to list.'),
    follow: str = typer.Option(None, '--follow', help="Print this job's log as it grows, until it ends."),
) -> None:
    """List recent jobs (newest first), or follow one job's log."""
    from rich.console import Console
    from rich.table import Table

    db = _connect(uri)
    try:
        if follow:
            job = db.watch_job(follow)
            raise typer.Exit(0 if job.status == 'success' else 1)
        table = Table('id', 'method', 'component', 'status', 'progress', 'seconds', 'error')
        for job in db.jobs(status, limit=limit):
            end = job.ended_at or (job.started_at and time.time())
            seconds = f'{end - job.started_at:.2f}' if job.started_at and end else ''
            error = (job.error or '').strip().splitlines()[-1][:80] if job.error else ''
            table.add_row(job.id, job.method, job.component or '', job.outcome, job.progress, seconds, error)
        Console().print(table)
    finally:
        db.close()


@app.command()
def status(uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).')) -> None:
    """Freshness of every watcher: rows, current outputs, backlog, lag and failed rows."""
    from rich.console import Console
    from rich.table import Table

    db = _connect(uri)
    try:
        report = db.status()
        if not report:
            typer.echo('no watchers')
            return
        table = Table(*report[0].keys())
        for row in report:
            table.add_row(*(str(v) for v in row.values()))
        Console().print(table)
    finally:
        db.close()


def _connect(uri: str | None) -> Any:
    from superduperdb import superduper
    from superduperdb.base.exceptions import SuperDuperError

    try:
        return superduper(uri)
    except SuperDuperError as exc:
        typer.echo(f'Could not open the database: {exc}', err=True)
        raise typer.Exit(1) from exc


@app.command()
def cdc(
    uri: str = typer.Option(None, '--uri', help='Database to follow (default: CFG.data_backend).'),
    once: bool = typer.Option(False, '--once', help='Handle what is pending now, print it, and exit.'),
) -> None:
    """Keep watcher outputs fresh as other applications write: runs until Ctrl-C or SIGTERM."""
    from superduperdb.base.exceptions import SuperDuperError

    db = _connect(uri)
    try:
        if once:
            counts = db.cdc.poll_once()
            typer.echo(', '.join(f'{kind} {n}' for kind, n in counts.items()))
            return
        tables = ', '.join(db.cdc.tables()) or 'none yet'
        typer.echo(f'change capture on {db.databackend.describe()}; watched tables: {tables}', err=True)
        db.cdc.run_forever()
        typer.echo('change capture stopped', err=True)
    except SuperDuperError as exc:
        typer.echo(f'change capture failed: {exc}', err=True)
        raise typer.Exit(1) from exc
    finally:
        db.close()


@app.command()
def serve(
    uri: str = typer.Option(None, '--uri', help='Database to serve (default: CFG.data_backend).'),
    host: str = typer.Option(None, '--host', help='Interface to listen on (default: CFG.server.host).'),
    port: int = typer.Option(None, '--port', help='Port (default: CFG.server.port).'),
    insecure: bool = typer.Option(
        False, '--insecure', help='Serve without a token: anyone who can reach the port can use the database.'
    ),
) -> None:
    """Serve the database over HTTP (OpenAPI docs at /docs); clients use superduper('http://host:port')."""
    from superduperdb.base.exceptions import SuperDuperError

    try:
        from superduperdb.server.app import serve as run_server

        run_server(uri, host=host, port=port, insecure=insecure)
    except SuperDuperError as exc:
        typer.echo(f'superduperdb serve: {exc}', err=True)
        raise typer.Exit(1) from exc


@app.command()
def demo(
    uri: str = typer.Option(None, '--uri', help='Database to use (default: the embedded SQLite file).'),
    limit: int = typer.Option(
        None, '--limit', min=50, help='Store only this many digits and this many texts (a quick run).'
    ),
) -> None:
    """Run the demo: digits images, a watched classifier, MiniLM vector search, on bundled data."""
    from superduperdb.demo import run

    run(uri, limit=limit)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == '__main__':  # pragma: no cover
    main()
