"""A small OpenAI-compatible HTTP API for tests, served on 127.0.0.1 from a background thread.

- ``POST /v1/embeddings``: a deterministic vector per text (:func:`embed`: a hashed bag
  of words, normalized, dimension 8), as floats or base64 like the real API;
- ``POST /v1/chat/completions``: answers with the last user message upper-cased.

Switches for retry tests: :meth:`OpenAIServer.fail` answers the next ``times``
requests (or all, ``times=None``) with an error status and an optional
``Retry-After``. Every request is recorded in ``requests`` (path, JSON body,
status answered). Requests without ``Authorization: Bearer <api_key>`` get 401.

    with OpenAIServer(api_key='sk-test') as server:
        client = openai.OpenAI(api_key='sk-test', base_url=server.base_url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIMENSION = 8


def embed(text: str) -> np.ndarray:
    """The server's embedding of ``text``: words hashed into 8 signed buckets, unit length."""
    vector = np.zeros(DIMENSION, dtype=np.float32)
    for word in text.lower().split():
        digest = hashlib.sha256(word.strip('.,!?;:').encode()).digest()
        vector[digest[0] % DIMENSION] += 1.0 if digest[1] % 2 else -1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def chat_answer(content: str) -> str:
    """The server's answer to a user message."""
    return content.upper()


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    status: int


class OpenAIServer:
    """The API on a free port; a context manager that starts and stops it."""

    def __init__(self, api_key: str = 'sk-test') -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._failures: int | None = 0  # None: fail forever
        self._status = 429
        self._retry_after: str | None = None
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name='openai-server', daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host!s}:{port}/v1'

    def fail(self, times: int | None, status: int = 429, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests (None: every request) with ``status``."""
        with self._lock:
            self._failures, self._status, self._retry_after = times, status, retry_after

    def reset(self) -> None:
        """Answer normally again and forget recorded requests."""
        with self._lock:
            self._failures, self._status, self._retry_after = 0, 429, None
            self.requests.clear()

    def count(self, path: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (path is None or r.path.endswith(path)) and (status is None or r.status == status)
            )

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ----- answering ----------------------------------------------------------------
    def _answer(self, path: str, headers: Any, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            if headers.get('Authorization') != f'Bearer {self.api_key}':
                status, extra, payload = 401, {}, _error('Incorrect API key provided.', 'invalid_api_key')
            elif self._failures is None or self._failures > 0:
                if self._failures is not None:
                    self._failures -= 1
                status = self._status
                extra = {'Retry-After': self._retry_after} if self._retry_after is not None else {}
                code = 'rate_limit_exceeded' if status == 429 else None
                payload = _error(f'Simulated failure {status}.', code)
            elif path == '/v1/embeddings':
                status, extra, payload = 200, {}, _embeddings(body)
            elif path == '/v1/chat/completions':
                status, extra, payload = 200, {}, _chat(body)
            else:
                status, extra, payload = 404, {}, _error(f'Unknown path {path}.', None)
            self.requests.append(Recorded(path, body, status))
        return status, extra, payload


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def do_POST(self) -> None:  # http.server's naming
            length = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(length) if length else b'{}'
            try:
                body = json.loads(raw or b'{}')
            except ValueError:
                body = {}
            status, extra, payload = server._answer(self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read server.requests
            pass

    return Handler


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    texts = body.get('input')
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    as_base64 = body.get('encoding_format') == 'base64'
    data = []
    for i, text in enumerate(texts):
        vector = embed(str(text))
        raw = base64.b64encode(vector.astype('<f4').tobytes()).decode()
        value: Any = raw if as_base64 else vector.tolist()
        data.append({'object': 'embedding', 'index': i, 'embedding': value})
    tokens = sum(len(str(t).split()) for t in texts)
    return {
        'object': 'list',
        'data': data,
        'model': body.get('model', ''),
        'usage': {'prompt_tokens': tokens, 'total_tokens': tokens},
    }


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    users = [m.get('content', '') for m in body.get('messages', []) if m.get('role') == 'user']
    answer = chat_answer(str(users[-1]) if users else '')
    return {
        'id': 'chatcmpl-test',
        'object': 'chat.completion',
        'created': int(time.time()),
        'model': body.get('model', ''),
        'choices': [
            {
                'index': 0,
                'message': {'role': 'assistant', 'content': answer},
                'finish_reason': 'stop',
            }
        ],
        'usage': {'prompt_tokens': 1, 'completion_tokens': 1, 'total_tokens': 2},
    }


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {'error': {'message': message, 'type': 'test_error', 'param': None, 'code': code}}
