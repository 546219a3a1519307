"""A small OpenAI-compatible HTTP API for tests, served on 127.0.0.1 from a background thread.

- ``POST /v1/embeddings``: a deterministic vector per text (:func:`embed`: a hashed bag
  of words, normalized, dimension 8), as floats or base64 like the real API;
- ``POST /v1/chat/completions``: answers with the last user message upper-cased.

No real API is reachable from the test machines: this server stands in for OpenAI, vLLM,
Ollama and llama.cpp, which speak the same protocol.

Switches for retry tests: :meth:`OpenAIServer.fail` answers the next ``times``
requests (or all, ``times=None``) with an error status and an optional
``Retry-After``. Rate limits like OpenAI's: ``OpenAIServer(requests=, tokens=, window=)``
answers 429 with ``Retry-After`` to a request that would put more than ``requests``
requests or ``tokens`` tokens in the last ``window`` seconds (a sliding window over the
requests accepted). Tokens are counted with ``count_tokens`` (words by default; pass a real
tokenizer to stand in for a server that serves a model). Every request is recorded in
``requests`` (path, JSON body, status answered, arrival time, tokens); ``latency`` seconds
are added to each answer. Requests without ``Authorization: Bearer <api_key>`` get 401.

    with OpenAIServer(api_key='sk-test') as server:
        client = openai.OpenAI(api_key='sk-test', base_url=server.base_url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
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


def count_words(text: str) -> int:
    return len(text.split())


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    status: int
    at: float = 0.0  # time.monotonic() on arrival
    tokens: int = 0

    @property
    def texts(self) -> list[str]:
        texts = self.body.get('input')
        if texts is not None:
            return [texts] if isinstance(texts, str) else [str(t) for t in texts]
        return [str(m.get('content', '')) for m in self.body.get('messages', []) if m.get('role') == 'user']


class OpenAIServer:
    """The API on a free port; a context manager that starts and stops it."""

    def __init__(
        self,
        api_key: str = 'sk-test',
        *,
        requests: int | None = None,
        tokens: int | None = None,
        window: float = 60.0,
        count_tokens: Callable[[str], int] = count_words,
        latency: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.limit_requests, self.limit_tokens, self.window = requests, tokens, window
        self.count_tokens, self.latency = count_tokens, latency
        self._accepted: deque[tuple[float, int]] = deque()  # (arrival, tokens) in the last window
        self._hold_after: int | None = None
        self._answered_rows = 0
        self._released = threading.Event()
        self.holding = 0  # requests held unanswered now (see hold_after)
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

    def hold_after(self, rows: int | None) -> None:
        """Once ``rows`` texts have been answered, hold every further request unanswered (a
        request stuck in flight); ``None`` lets the held ones go, answered 503."""
        with self._lock:
            self._hold_after, self._answered_rows = rows, 0
        if rows is None:
            self._released.set()
        else:
            self._released.clear()

    def _held(self) -> bool:
        """Wait here while requests are held; whether this one was."""
        with self._lock:
            hold = self._hold_after is not None and self._answered_rows >= self._hold_after
            if hold:
                self.holding += 1
        if hold:
            self._released.wait(timeout=300)
            with self._lock:
                self.holding -= 1
        return hold

    def reset(self) -> None:
        """Answer normally again and forget recorded requests."""
        with self._lock:
            self._failures, self._status, self._retry_after = 0, 429, None
            self.requests.clear()
            self._accepted.clear()

    def most_in_window(self, window: float | None = None, *, tokens: bool = False) -> int:
        """The most requests (``tokens``: tokens) that arrived in any ``window`` seconds,
        counting every request received (answered 429 or not)."""
        window = self.window if window is None else window
        with self._lock:
            arrivals = sorted((r.at, r.tokens if tokens else 1) for r in self.requests)
        most = total = lo = 0
        for at, n in arrivals:
            total += n
            while arrivals[lo][0] <= at - window:
                total -= arrivals[lo][1]
                lo += 1
            most = max(most, total)
        return most

    def _over_limit(self, now: float, tokens: int) -> float | None:
        """Seconds until a request of ``tokens`` fits the limits, None if it fits now."""
        accepted = self._accepted
        while accepted and accepted[0][0] <= now - self.window:
            accepted.popleft()
        waits = []
        if self.limit_requests is not None and len(accepted) + 1 > self.limit_requests:
            waits.append(accepted[len(accepted) - self.limit_requests][0] + self.window - now)
        if self.limit_tokens is not None:
            used = sum(n for _, n in accepted)
            if used + tokens > self.limit_tokens:
                freed, wait = 0, 0.0
                for at, n in accepted:
                    freed += n
                    wait = at + self.window - now
                    if used - freed + tokens <= self.limit_tokens:
                        break
                waits.append(wait)
        return max(waits) if waits else None

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
        held = self._held()
        with self._lock:
            now = time.monotonic()
            texts = Recorded(path, body, 0).texts
            tokens = sum(self.count_tokens(t) for t in texts)
            wait = self._over_limit(now, tokens)
            if headers.get('Authorization') != f'Bearer {self.api_key}':
                status, extra, payload = 401, {}, _error('Incorrect API key provided.', 'invalid_api_key')
            elif self._failures is None or self._failures > 0:
                if self._failures is not None:
                    self._failures -= 1
                status = self._status
                extra = {'Retry-After': self._retry_after} if self._retry_after is not None else {}
                code = 'rate_limit_exceeded' if status == 429 else None
                payload = _error(f'Simulated failure {status}.', code)
            elif held:
                status, extra, payload = 503, {}, _error('Held, then let go unanswered.', None)
            elif wait is not None:
                status, extra = 429, {'Retry-After': f'{max(wait, 0.001):.3f}'}
                payload = _error('Rate limit reached: please try again later.', 'rate_limit_exceeded')
            elif path == '/v1/embeddings':
                status, extra, payload = 200, {}, _embeddings(body, tokens)
            elif path == '/v1/chat/completions':
                status, extra, payload = 200, {}, _chat(body, tokens, self.count_tokens)
            else:
                status, extra, payload = 404, {}, _error(f'Unknown path {path}.', None)
            if status == 200:
                self._accepted.append((now, tokens))
                self._answered_rows += len(texts)
            self.requests.append(Recorded(path, body, status, now, tokens))
        if self.latency:
            time.sleep(self.latency)
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
            try:
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client is gone (killed)
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read server.requests
            pass

    return Handler


def _embeddings(body: dict[str, Any], tokens: int) -> dict[str, Any]:
    texts = body.get('input')
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    as_base64 = body.get('encoding_format') == 'base64'
    data = []
    for i, text in enumerate(texts):
        vector = embed(str(text))
        raw = base64.b64encode(vector.astype('<f4').tobytes()).decode()
        value: Any = raw if as_base64 else vector.tolist()
        data.append({'object': 'embedding', 'index': i, 'embedding': value})
    return {
        'object': 'list',
        'data': data,
        'model': body.get('model', ''),
        'usage': {'prompt_tokens': tokens, 'total_tokens': tokens},
    }


def _chat(body: dict[str, Any], tokens: int, count: Callable[[str], int]) -> dict[str, Any]:
    users = [m.get('content', '') for m in body.get('messages', []) if m.get('role') == 'user']
    answer = chat_answer(str(users[-1]) if users else '')
    completion = count(answer)
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
        'usage': {
            'prompt_tokens': tokens,
            'completion_tokens': completion,
            'total_tokens': tokens + completion,
        },
    }


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {'error': {'message': message, 'type': 'test_error', 'param': None, 'code': code}}
