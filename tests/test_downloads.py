"""Data references on every backend: ``pil_image(uri=...)`` fetched by a download job from a real
HTTP server on 127.0.0.1 and from files; one bad URI never fails its batch. The server here is on
loopback, which the fetch policy refuses by default: these tests opt in (``local_fetches``);
tests/test_security.py checks the default."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import PIL.Image
import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import EncodingError, NotSupported
from superduperdb.encoders.pillow import pil_image
from superduperdb.freshness.downloads import ledger


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new('RGB', (width, height), 'red').save(buffer, format='PNG')
    return buffer.getvalue()


class Files(BaseHTTPRequestHandler):
    """Serves ``files`` by path; ``/flaky`` answers 500 once, then the image."""

    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == '/flaky.png' and self.hits[self.path] == 1:
            self.send_error(500, 'try again')
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, 'not here')
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(autouse=True)
def local_fetches():
    """The test HTTP server listens on 127.0.0.1: allow private addresses (and fsspec's
    in-memory filesystem, the stand-in for s3://) for these tests only."""
    schemes = [*CFG.downloads.schemes, 'memory']
    with CFG.override(**{'downloads.allow_private_addresses': True, 'downloads.schemes': schemes}):
        yield


@pytest.fixture
def server():
    Files.files = {'/a.png': png(30, 20), '/flaky.png': png(5, 6), '/text.png': b'not an image at all'}
    Files.hits = {}
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='a download writes into the row; lake rows are append-only'
)
def test_references_are_downloaded_and_bad_ones_recorded(db, table_name, server, tmp_path):
    (tmp_path / 'local.png').write_bytes(png(7, 8))
    coll = Collection(table_name)
    docs = [
        {'n': 0, 'img': pil_image(uri=f'{server}/a.png')},
        {'n': 1, 'img': pil_image(uri=f'{server}/flaky.png')},
        {'n': 2, 'img': pil_image(uri=f'file://{tmp_path}/local.png')},
        {'n': 3, 'img': pil_image(uri=f'{server}/missing.png')},
        {'n': 4, 'img': pil_image(uri=f'{server}/text.png')},
        {'n': 5, 'img': pil_image(PIL.Image.new('RGB', (2, 2)))},  # a value, nothing to fetch
    ]
    with CFG.override(**{'downloads.retries': 2}):
        result = db.execute(coll.insert_many(docs))
    (job,) = result.jobs
    assert job.method == 'download' and job.status == 'success'
    assert job.result == {'downloaded': 3, 'failed': 2}
    assert Files.hits['/flaky.png'] == 2  # a 500 is retried
    assert Files.hits['/missing.png'] == 1  # a 404 is not

    got = {d['n']: d['img'] for d in db.execute(coll.find())}
    assert got[0].x.size == (30, 20) and got[1].x.size == (5, 6) and got[2].x.size == (7, 8)
    assert got[3].pending and got[3].uri == f'{server}/missing.png'
    assert got[4].pending and got[5].x.size == (2, 2)
    failures = {f['source_id']: f for f in db.metadata.failures(ledger(table_name, 'img'))}
    assert len(failures) == 2
    messages = sorted(f['message'] for f in failures.values())
    assert 'HTTP 404' in messages[0] and 'not a valid pil_image' in messages[1]

    # the server gets the missing file; running the download again fetches it and clears its failure
    Files.files['/missing.png'] = png(3, 3)
    again = db.submit_job('download', job.args)
    assert again.result == {'downloaded': 1, 'failed': 1}
    assert db.execute(coll.find_one({'n': 3}))['img'].x.size == (3, 3)
    assert len(db.metadata.failures(ledger(table_name, 'img'))) == 1


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='a download writes into the row; lake rows are append-only'
)
def test_watchers_of_a_referenced_field_run_after_its_download(db, table_name, server):
    coll = Collection(table_name)
    size = superduper(lambda img: img.size[0] * img.size[1], identifier='area')
    db.add(Watcher(model=size, key='img', select=coll.find()))
    result = db.execute(coll.insert_many([{'n': 0, 'img': pil_image(uri=f'{server}/a.png')}]))
    download, predict = result.jobs
    assert download.method == 'download' and predict.dependencies == [download.id]
    assert predict.result['computed'] == 1
    assert db.execute(coll.find_one({'n': 0}))['_outputs']['img']['area'] == 600


def test_a_reference_needs_a_url():
    with pytest.raises(EncodingError, match='uri= takes a URL'):
        pil_image(uri='cat.png')
    with pytest.raises(EncodingError, match='not both'):
        pil_image(PIL.Image.new('RGB', (1, 1)), uri='file:///cat.png')
    pending = pil_image(uri='https://example.com/cat.png')
    assert pending.pending and pending.x is None and 'example.com' in repr(pending)
    with pytest.raises(EncodingError, match='not been downloaded'):
        pending.encode()


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='a download writes into the row; lake rows are append-only'
)
def test_other_schemes_go_through_fsspec(db, table_name):
    """fsspec's in-memory filesystem stands in for s3:// or gs:// (no cloud here): same code path."""
    import fsspec

    with fsspec.open('memory://bucket/d.png', 'wb') as f:
        f.write(png(4, 9))
    coll = Collection(table_name)
    uris = ['memory://bucket/d.png', 'memory://bucket/gone.png']
    result = db.execute(coll.insert_many([{'n': i, 'img': pil_image(uri=u)} for i, u in enumerate(uris)]))
    assert result.jobs[0].result == {'downloaded': 1, 'failed': 1}
    assert db.execute(coll.find_one({'n': 0}))['img'].x.size == (4, 9)
    (failure,) = db.metadata.failures(ledger(table_name, 'img'))
    assert 'not found' in failure['message']
