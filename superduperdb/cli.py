"""The ``superduperdb`` command line.

Commands: ``config`` (the effective configuration), ``info`` (versions, the
connected backend, registered components), ``jobs`` (recent jobs, or follow
one), ``status`` (freshness of each watcher), ``search`` (vector, keyword or hybrid
search), ``failures`` and ``retry`` (a watcher's failure
ledger, and computing its rows again), ``evaluate`` (a vector index measured on an evaluation
set), ``serve`` (the HTTP server), ``ui`` (the web dashboard on this machine), ``cdc`` (change
capture for writes made by other applications), ``demo`` (the product on the embedded default
database).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import typer


class _App(typer.Typer):
    """The command group: an error is one line on stderr and exit status 1 (``--debug``: the traceback)."""

    debug = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # KeyboardInterrupt and SystemExit pass through
            if self.debug:
                raise
            from superduperdb.base.exceptions import SuperDuperError
            from superduperdb.base.masking import mask_secrets

            lines = mask_secrets(str(exc)).strip().splitlines() or ['']  # a driver's error quoting a URI
            message = lines[0] if isinstance(exc, SuperDuperError) else f'{type(exc).__name__}: {lines[0]}'
            if len(lines) > 1 or not isinstance(exc, SuperDuperError):
                message += ' (superduperdb --debug <command> prints the traceback)'
            typer.echo(f'Error: {message}', err=True)
            sys.exit(1)


app = _App(
    help='superduperdb: bring AI models to the database you already have.',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help text: formatting it with rich imports rich and markdown-it (~0.15 s of every --help)
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from superduperdb.base.version import __version__

        typer.echo(f'superduperdb {__version__}')
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, '--debug', help='On an error, print the full traceback.'),
    version: bool = typer.Option(
        False, '--version', callback=_print_version, is_eager=True, help='Print the version and exit.'
    ),
) -> None:
    """superduperdb: bring AI models to the database you already have."""
    app.debug = debug


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

    settings = CFG.to_dict(hide_secrets=True)
    path = config_file()
    typer.echo(json.dumps({'config_file': str(path) if path else None, **settings}, indent=2))


@app.command()
def info(
    uri: str = typer.Option(None, '--uri', help='Database to inspect (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print one JSON object instead of text.'),
) -> None:
    """Print versions, the connected backend and the registered components."""
    from importlib import metadata as importlib_metadata

    from superduperdb.base.masking import mask_secrets
    from superduperdb.base.version import __version__

    installed = {}
    for name in _PACKAGES:
        try:
            installed[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    db = _connect(uri, 'info')
    try:
        components = {
            type_id: {identifier: db.show(type_id, identifier) for identifier in identifiers}
            for type_id, identifiers in db.show().items()
        }
        database, artifacts = db.databackend.describe(), db.artifact_store.describe()
        database, artifacts = mask_secrets(database), mask_secrets(artifacts)  # whatever describe() says
    finally:
        db.close()
    if as_json:
        found = {
            'superduperdb': __version__,
            'python': platform.python_version(),
            'platform': sys.platform,
            'installed': installed,
            'database': database,
            'artifacts': artifacts,
            'components': components,
        }
        typer.echo(json.dumps(found, indent=2))
        return
    typer.echo(f'superduperdb {__version__} on Python {platform.python_version()} ({sys.platform})')
    typer.echo('installed: ' + ', '.join(f'{name}=={v}' for name, v in installed.items()))
    typer.echo(f'database: {database}')
    typer.echo(f'artifacts: {artifacts}')
    if not components:
        typer.echo('components: none registered')
    for type_id, versions in components.items():
        for identifier, numbers in versions.items():
            typer.echo(f'{type_id}: {identifier} (versions {", ".join(map(str, numbers))})')


@app.command()
def jobs(
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    status: str = typer.Option(None, '--status', help='Only jobs with this status.'),
    limit: int = typer.Option(20, '--limit', help='How many of the newest jobs to list.'),
    follow: str = typer.Option(
        None, '--follow', help="Print this job's log as it grows, until it ends (an id or a unique prefix)."
    ),
    as_json: bool = typer.Option(False, '--json', help='Print JSON (with --follow: the ended job).'),
) -> None:
    """List recent jobs (newest first), or follow one job's log."""
    db = _connect(uri, 'jobs')
    try:
        if follow:
            job = db.watch_job(db.job(follow).id, out=sys.stderr if as_json else None)
            if as_json:
                typer.echo(json.dumps(_job_json(job), indent=2))
            raise typer.Exit(0 if job.status == 'success' else 1)
        found = db.jobs(status, limit=limit)
        if as_json:
            typer.echo(json.dumps([_job_json(job) for job in found], indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table()
        # ids whole, never cut: they are what --follow and db.job() take
        table.add_column('id', no_wrap=True, min_width=max((len(j.id) for j in found), default=2))
        for name in ('method', 'component', 'status', 'progress', 'seconds', 'error'):
            table.add_column(name, overflow='fold')
        for job in found:
            record = _job_json(job)
            seconds = '' if record['seconds'] is None else f'{record["seconds"]:.2f}'
            error = (job.error or '').strip().splitlines()[-1][:80] if job.error else ''
            table.add_row(job.id, job.method, job.component or '', job.outcome, job.progress, seconds, error)
        Console().print(table)
    finally:
        db.close()


def _job_json(job: Any) -> dict[str, Any]:
    end = job.ended_at or (job.started_at and time.time())
    return {
        'id': job.id,
        'method': job.method,
        'component': job.component,
        'status': job.status,
        'done': job.done,
        'total': job.total,
        'progress': job.progress,
        'created_at': job.created_at,
        'started_at': job.started_at,
        'ended_at': job.ended_at,
        'seconds': round(end - job.started_at, 3) if job.started_at and end else None,
        'dependencies': job.dependencies,
        'error': job.error,
    }


@app.command()
def status(
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print a JSON list, one object per watcher.'),
) -> None:
    """Freshness of every watcher: rows, current outputs, backlog, lag and failed rows.

    Reads records only: no model is loaded.
    """
    db = _connect(uri, 'status')
    try:
        report = db.status()
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if not report:
        typer.echo('no watchers')
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # the figures a newcomer acts on, in 80 columns (a watcher's default name, model@table.key,
    # is most of them); the rest as notes, only when not as usual (--json has every field)
    notes = [_status_notes(row) for row in report]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ('watcher', 'rows', 'current', 'backlog', 'failed', 'lag s', 'notes')[
        : 7 if any(notes) else 6
    ]:
        table.add_column(name, overflow='fold', justify='right' if name in _FIGURES else 'left')
    for row, note in zip(report, notes):
        figures = [str(row[name]) for name in ('rows', 'current', 'backlog', 'failed')]
        table.add_row(row['watcher'], *figures, f'{row["lag_s"]:g}', *([note] if any(notes) else []))
    Console().print(table)


_FIGURES = ('rows', 'current', 'backlog', 'failed', 'lag s')


def _status_notes(row: dict[str, Any]) -> str:
    """What the narrow status table says in words: only what is not as usual."""
    notes = []
    if f'@{row["table"]}.' not in row['watcher']:  # a name of the user's own: say the table
        notes.append(f'on {row["table"]}')
    if row.get('table_missing'):
        notes.append('table missing')
    if not row.get('active', True):
        notes.append('inactive')
    for name in ('stale', 'queued', 'jobs'):
        if row.get(name):
            notes.append(f'{row[name]} {name}')
    notes.extend(_usage_notes(row))
    if 'chunks' in row:  # a chunker: its chunks, and those that went wrong
        notes.append(f'{row["chunks"]} chunks')
        for name in ('orphaned', 'failed_chunks'):
            if row.get(name):
                notes.append(f'{row[name]} {name.replace("_", " ")}')
    return ', '.join(notes)


@app.command()
def search(
    table: str = typer.Argument(..., help='The table (collection) to search.'),
    text: str = typer.Option(..., '--text', help='What to search for.'),
    field: str = typer.Option(
        ..., '--field', help='The text field the indexes index (their key), e.g. body.'
    ),
    like: str = typer.Option(None, '--like', help='A vector index: search by meaning.'),
    match: str = typer.Option(None, '--match', help='A keyword index: search by words.'),
    n: int = typer.Option(10, '--n', min=1, help='How many results.'),
    fuse: str = typer.Option(None, '--fuse', help='With --like and --match: rrf (the default) or weighted.'),
    rerank: str = typer.Option(None, '--rerank', help='A stored model scoring (query, text) pairs again.'),
    filter: str = typer.Option(None, '--filter', help='A JSON filter: search among the rows it matches.'),
    uri: str = typer.Option(None, '--uri', help='Database or server URL (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print {"documents": [...], "timings": {...}}.'),
) -> None:
    """Search a table by meaning (--like), by words (--match), or both (hybrid: the two
    rankings fused, --fuse says how); --rerank scores the results again with a model. Prints
    the results best first, each with its score, each part's rank and score, and the time each
    step took."""
    q = _search_query(table, {field: text}, like, match, n, fuse, rerank, filter)
    db = _connect(uri, 'search')
    try:
        cursor = db.execute(q)
        docs, timings = list(cursor), cursor.timings
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps({'documents': docs, 'timings': timings}, indent=2, default=str))
        return
    for rank, doc in enumerate(docs, start=1):
        typer.echo(_search_line(rank, doc, field))
    steps = ', '.join(f'{name.removesuffix("_ms")} {ms:.1f} ms' for name, ms in timings.items())
    typer.echo(f'{len(docs)} result{"" if len(docs) == 1 else "s"} · {steps}')


def _search_query(
    table: str,
    value: dict[str, str],
    like: str | None,
    match: str | None,
    n: int,
    fuse: str | None,
    rerank: str | None,
    filter: str | None,
) -> Any:
    """The query ``superduperdb search`` runs, its options checked first."""
    from superduperdb.base.exceptions import QueryError
    from superduperdb.query.objects import Collection

    if like is None and match is None:
        raise QueryError(
            'Name an index to search: --like VECTOR_INDEX (by meaning), --match KEYWORD_INDEX '
            '(by words), or both (hybrid). superduperdb info lists them.'
        )
    if fuse is not None and (like is None or match is None):
        raise QueryError('--fuse ranks the results of --like and --match together: give both.')
    try:
        where = json.loads(filter) if filter is not None else {}
    except json.JSONDecodeError as exc:
        raise QueryError(f'--filter takes a JSON object such as \'{{"n": {{"$gte": 3}}}}\': {exc}.') from exc
    if not isinstance(where, dict):
        raise QueryError(f'--filter takes a JSON object such as \'{{"n": {{"$gte": 3}}}}\', got {filter}.')
    q = Collection(table).find(where)
    if like is not None:
        q = q.like(value, like, n=n)
    if match is not None:
        q = q.match(value, match, n=n)
    if fuse is not None:
        q = q.fuse(fuse, n=n)
    return q.rerank(rerank, top=n) if rerank is not None else q


def _search_line(rank: int, doc: dict[str, Any], field: str) -> str:
    """One result: its place, score, each part's rank (score), its id and its text."""
    scores, ranks = doc.get('_scores') or {}, doc.get('_ranks') or {}
    parts = [f'{rank:>3}  score {doc["_score"]:.4g}']
    for part in ('like', 'match'):
        if part in ranks:
            shown = '-' if ranks[part] is None else f'{ranks[part]} ({scores[part]:.4g})'
            parts.append(f'{part} {shown}')
    if 'rerank' in scores:
        parts.append(f'rerank {scores["rerank"]:.4g}')
    text = ' '.join(str(doc.get(field, '')).split())
    parts.append(f'id {doc.get("_id")}: {text[:200]}')
    return '  '.join(parts)


def _usage_notes(row: dict[str, Any]) -> list[str]:
    """An API model's usage in words: tokens, requests, errors, 429s, cost."""
    usage = row.get('usage')
    if not usage:
        return []
    tokens = int(usage.get('input_tokens', 0)) + int(usage.get('output_tokens', 0))
    notes = [f'{tokens} tokens in {usage.get("requests", 0)} requests']
    for name, label in (('errors', 'errors'), ('rate_limited', '429s')):
        if usage.get(name):
            notes.append(f'{usage[name]} {label}')
    if usage.get('cost') is not None:
        notes.append(f'${usage["cost"]:.4f}')
    return notes


def _connect(uri: str | None, read_only: str | None = None) -> Any:
    """Open the database; ``read_only`` (the command's name): refuse to create a missing file."""
    from superduperdb.superduper import superduper

    if read_only:
        _check_files(uri, read_only, 'It only reads, so it does not create one.')
    return superduper(uri)  # a failure is reported in one line by _App


def _check_files(uri: str | None, command: str, why: str) -> None:
    """Refuse to go on when the SQLite/DuckDB file of the data or metadata store is missing:
    opening it would create an empty database (in the current folder, for the default)."""
    from superduperdb.base.config import CFG
    from superduperdb.base.exceptions import ConfigError

    targets = (
        ('--uri' if uri else 'data_backend', uri or CFG.data_backend),
        ('metadata_store', CFG.metadata_store),
    )
    for setting, target in targets:
        path = _database_file(target)
        if path is not None and not path.exists():
            raise ConfigError(
                f'No database file at {path} ({setting}: {target}). `superduperdb {command}` needs '
                f'an existing database. {why} Check --uri, SUPERDUPERDB_DATA_BACKEND or the config '
                'file (superduperdb config prints the effective settings).'
            )


def _database_file(target: Any) -> Path | None:
    """The file a SQLite/DuckDB URI names (None for other databases and for :memory:)."""
    if not isinstance(target, str):
        return None
    scheme, sep, rest = target.partition(':///')
    if not sep or scheme.split('+')[0].lower() not in ('sqlite', 'duckdb'):
        return None
    path = rest.split('?')[0]
    if not path or path == ':memory:':
        return None
    return Path(path).expanduser()


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
    from superduperdb.base.config import CFG
    from superduperdb.base.exceptions import SuperDuperError

    try:
        run_server = _server('serve')
        host, port = host or CFG.server.host, port or CFG.server.port
        _check_port(host, port, 'serve')
        run_server(uri, host=host, port=port, insecure=insecure)
    except SuperDuperError as exc:
        _exit_with(exc)


@app.command()
def ui(
    uri: str = typer.Option(
        None, '--uri', help='Database to show (default: CFG.data_backend, the embedded SQLite file).'
    ),
    port: int = typer.Option(None, '--port', help='Port (default: CFG.server.port).'),
) -> None:
    """Serve the web dashboard on this machine (127.0.0.1 only); opens no browser by itself.

    Log in with CFG.server.token; without one, a token for this run is printed on stderr.
    """
    from superduperdb.base.exceptions import SuperDuperError

    try:
        _ui(uri, port)
    except SuperDuperError as exc:
        _exit_with(exc)


def _exit_with(exc: Exception) -> None:
    """Report a refusal in one line, as :class:`_App` does (also where the command runs
    without it: typer's CliRunner), and exit with status 1."""
    from superduperdb.base.masking import mask_secrets

    if app.debug:
        raise exc
    lines = mask_secrets(str(exc)).strip().splitlines() or ['']
    typer.echo(f'Error: {lines[0]}', err=True)
    raise typer.Exit(1) from exc


def _ui(uri: str | None, port: int | None) -> None:
    import secrets

    from superduperdb.base.config import CFG

    run_server = _server('ui')
    port = port or CFG.server.port
    # everything that can be refused is checked before the token is printed: a token followed
    # by a failure reads as if the dashboard were up
    _check_port('127.0.0.1', port, 'ui')
    _check_files(
        uri,
        'ui',
        'It shows a database, so it does not create one: run your program or '
        '`superduperdb demo` first, or pass --uri.',
    )
    token = CFG.server.token
    if not token:
        token = secrets.token_urlsafe(24)
        typer.echo(f'superduperdb ui: no server.token is set; the token of this run is {token}', err=True)
    typer.echo(f'superduperdb ui: dashboard at http://127.0.0.1:{port}/ui/ (Ctrl-C stops it)', err=True)
    with CFG.override(**{'server.token': token}):
        run_server(uri, host='127.0.0.1', port=port)


def _server(command: str) -> Any:
    """The server's ``serve``, or an error naming the extra it needs (FastAPI and uvicorn are
    not part of the core install)."""
    from superduperdb.base._deps import require

    for module in ('fastapi', 'uvicorn', 'jinja2'):
        require(module, extra='server', what=f'`superduperdb {command}`')
    from superduperdb.server.app import serve as run_server

    return run_server


def _check_port(host: str, port: int, command: str) -> None:
    """Refuse a port that cannot be listened on, before anything starts: uvicorn would log its
    error among its start-up lines and exit with status 0."""
    import errno
    import socket

    from superduperdb.base.exceptions import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f'--port {port} is not a port: use a number from 1 to 65535.')
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f'Port {port} on {host} is in use (another server, or another `superduperdb '
                    f'{command}`?). Pick another: superduperdb {command} --port {_free_port(host, port)}'
                ) from None
            raise ConfigError(f'Cannot listen on {host}:{port}: {exc.strerror or exc}.') from None


def _free_port(host: str, near: int) -> int:
    """A port above ``near`` that is free now (for the hint of a port in use)."""
    import socket

    for candidate in range(near + 1, min(near + 100, 65536)):
        with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return near + 1


@app.command()
def failures(
    watcher: str = typer.Argument(..., help='The watcher (see superduperdb status).'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print a JSON list.'),
) -> None:
    """A watcher's failure ledger: rows its model could not compute, newest first."""
    db = _connect(uri, 'failures')
    try:
        found = db.failures(watcher)
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(list(found), indent=2))
        return
    if not found:
        typer.echo('no failed rows')
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for name in ('row', 'error', 'message', 'attempts', 'last try'):
        table.add_column(name, overflow='fold')
    for f in found:
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(f['failed_at']))
        table.add_row(f['row'], f['error'], f['message'], str(f['attempts']), when)
    Console().print(table)


@app.command()
def estimate(
    watcher: str = typer.Argument(..., help='The watcher (see superduperdb status).'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    confirm: bool = typer.Option(False, '--confirm', help='Confirm a backfill of up to this cost.'),
    as_json: bool = typer.Option(False, '--json', help='Print a JSON object.'),
) -> None:
    """What computing a watcher's outputs would take: rows to compute and current, tokens,
    requests, cost at openai.prices and time at the rate limit. Nothing is sent."""
    db = _connect(uri, 'estimate')
    try:
        found = db.estimate(watcher, confirm=confirm)
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    typer.echo(str(found))
    if confirm:
        typer.echo('confirmed: a backfill of up to this cost may run (openai.confirm_cost_above)')


@app.command()
def retry(
    watcher: str = typer.Argument(..., help='The watcher whose failed rows to compute again.'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
) -> None:
    """Run a watcher's model again over its failed rows now (no backoff); prints the job."""
    db = _connect(uri, 'retry')
    try:
        job = db.retry_failed(watcher)
        result = job.result or {}
        typer.echo(
            f'job {job.id}: {job.outcome}; '
            f'{result.get("computed", 0)} computed, {result.get("failed", 0)} failed'
        )
    finally:
        db.close()


@app.command()
def evaluate(
    index: str = typer.Argument(
        ..., help='The vector index to measure (with --keyword and one argument: the evaluation set).'
    ),
    evaluation_set: str = typer.Argument(None, help='The evaluation set (an EvaluationSet component).'),
    keyword: str = typer.Option(None, '--keyword', help='A keyword index: alone, or hybrid with INDEX.'),
    fuse: str = typer.Option(None, '--fuse', help='How a hybrid search fuses: rrf (default) or weighted.'),
    rerank: str = typer.Option(None, '--rerank', help='A stored reranker model: scores (query, text) pairs.'),
    rerank_top: int = typer.Option(50, '--rerank-top', help='Candidates the reranker scores.'),
    k: int = typer.Option(10, '--k', help='Results per query that count.'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print the result as JSON (per query too).'),
    history: bool = typer.Option(False, '--history', help="Print the index's earlier results instead."),
) -> None:
    """Measure a search on an evaluation set: recall@k, precision@k, MRR, nDCG@k and latency;
    the result is kept in the database (--history lists them). The search: vector index INDEX,
    keyword index --keyword alone (evaluate SET --keyword kw), or both (hybrid, --fuse), each
    optionally reranked (--rerank)."""
    if evaluation_set is None and keyword is not None and not history:
        index, evaluation_set = None, index  # type: ignore[assignment]  # evaluate SET --keyword kw
    db = _connect(uri, 'evaluate')
    try:
        if history:
            found = db.evaluations(index)
            typer.echo(
                json.dumps(found, indent=2) if as_json else '\n'.join(_evaluation_line(e) for e in found)
            )
            return
        if evaluation_set is None:
            typer.echo('evaluate needs INDEX and SET (or SET --keyword KW): see --help.', err=True)
            raise typer.Exit(2)
        result = db.evaluate(
            index, evaluation_set, keyword=keyword, fuse=fuse, rerank=rerank, rerank_top=rerank_top, k=k
        )
    finally:
        db.close()
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else _evaluation_line(result.to_dict()))


def _evaluation_line(e: dict[str, Any]) -> str:
    from superduperdb.vector_search.evaluate import describe

    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['created_at']))
    model = f' ({e["model"][0]} v{e["model"][1]}, {e["engine"]})' if e.get('model') else ''
    figures = '  '.join(f'{name} {value:.3f}' for name, value in e['metrics'].items())
    return f'{when}  {describe(e)}{model} on {e["evaluation_set"]}: {figures}'


@app.command()
def promote(
    index: str = typer.Argument(..., help='The vector index whose staged version (db.stage) to judge.'),
    evaluation_set: str = typer.Argument(..., help='The evaluation set both versions are measured on.'),
    rule: str = typer.Option(
        None, '--rule', help="When the staged version serves: e.g. 'ndcg@10 >= live' (the default)."
    ),
    k: int = typer.Option(10, '--k', help='Results per query that count.'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    as_json: bool = typer.Option(False, '--json', help='Print the outcome as JSON.'),
) -> None:
    """Measure the staged and the live version of INDEX on SET; the staged one serves (in every
    process within a second) only if its metrics pass --rule. Both results are kept."""
    db = _connect(uri, 'promote')
    try:
        outcome = db.promote(index, evaluation_set, rule=rule, k=k)
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    verdict = (
        'promoted: it serves now' if outcome.promoted else 'not promoted: the live version keeps serving'
    )
    typer.echo(
        f'{index}: version {outcome.staged} against live version {outcome.live}, rule {outcome.rule!r}'
    )
    for name in outcome.staged_metrics:
        live, staged = outcome.live_metrics.get(name), outcome.staged_metrics[name]
        typer.echo(f'  {name:<16} live {live:.3f}  staged {staged:.3f}' if live is not None else f'  {name}')
    typer.echo(f'{verdict}{f" ({outcome.reason})" if outcome.reason else ""}')


@app.command()
def rollback(
    index: str = typer.Argument(..., help='The vector index to take back to the version that served before.'),
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
) -> None:
    """Make the version of INDEX that served before the current one serve again (every process
    within a second); the current one is kept."""
    db = _connect(uri, 'rollback')
    try:
        version = db.rollback(index)
    finally:
        db.close()
    typer.echo(f'{index}: version {version} serves again')


@app.command()
def uninstall(
    uri: str = typer.Option(None, '--uri', help='Database (default: CFG.data_backend).'),
    yes: bool = typer.Option(False, '--yes', help='Do not ask before removing.'),
) -> None:
    """Remove everything superduperdb made in a database (its tables, views, triggers,
    functions, schema, artifacts) and print what; your own tables and rows stay."""
    db = _connect(uri, 'uninstall')
    try:
        where = db.databackend.describe()
        if not yes and not typer.confirm(
            f'Remove superduperdb (components, outputs, jobs, triggers) from {where}? Your tables stay.'
        ):
            typer.echo('nothing removed')
            raise typer.Exit(1)
        report = db.drop_superduperdb()
    finally:
        db.close()
    typer.echo(f'{where}:')
    typer.echo(str(report))


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
