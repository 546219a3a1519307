"""The ``superduperdb`` command line.

Commands: ``config`` (the effective configuration), ``info`` (versions, the
connected backend, registered components), ``demo`` (the product on the
embedded default database).
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata as importlib_metadata

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
def demo(
    uri: str = typer.Option(None, '--uri', help='Database to use (default: the embedded SQLite file).'),
    limit: int = typer.Option(None, '--limit', help='Store only this many digits.'),
) -> None:
    """Run the demo on the embedded default database, with data that ships with scikit-learn."""
    from superduperdb.demo import run

    run(uri, limit=limit)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == '__main__':  # pragma: no cover
    main()
