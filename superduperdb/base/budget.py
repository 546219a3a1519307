"""Rate-limit budgets shared by every process that calls one API: requests and tokens per
window, requests in flight, and the pauses a server asks for (429 + ``Retry-After``).

A budget is one small JSON record read and replaced by compare-and-swap (:class:`Record`),
kept where every process can reach it: the metadata store of the database by default
(``superduperdb.store.budget``), Redis when ``CFG.openai.budget`` is a ``redis://`` URL
(:class:`RedisRecord`), or this process only (:class:`LocalRecord`). Times are the record's
clock (the database server's, Redis's), never compared across processes' own clocks.

Each request *reserves* its slot: one compare-and-swap moves the budget's next free times
on, then the caller sleeps until its slot. Requests are paced (a generic cell rate: one
request every ``window / requests``, tokens at ``tokens / window``), so in any window of
``window`` seconds the server sees at most ``requests`` requests, and at most ``tokens``
tokens when each request holds at most :meth:`Budget.max_request_tokens` (batches are cut to
fit). A ``margin`` (a fraction) is held back for the jitter between a slot and the request's
arrival.

>>> budget = Budget(LocalRecord(), Limits(requests=600, window=60.0), sleep=lambda s: None)
>>> lease = budget.acquire(tokens=10)
>>> budget.release(lease)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from superduperdb.base.exceptions import ConfigError, ServiceError


class Record(Protocol):
    """One shared text record with a clock: what a budget is kept in."""

    def read(self) -> str | None:
        """The record's text, None when it was never written."""

    def swap(self, old: str | None, new: str) -> bool:
        """Write ``new`` only if the record is still ``old``; whether it was."""

    def now(self) -> float:
        """Seconds since the epoch on the clock every process of this record shares."""


@dataclass(frozen=True)
class Limits:
    """An API's limits: ``requests`` and ``tokens`` per ``window`` seconds (None: no limit),
    ``concurrency`` requests in flight at once across processes (None: no limit)."""

    requests: int | None = None
    tokens: int | None = None
    concurrency: int | None = None
    window: float = 60.0
    #: the fraction of the window held back for jitter between a slot and the request's arrival
    margin: float = 0.02
    #: the fraction of the token limit one request may hold (see the module docstring)
    request_share: float = 0.03

    def __post_init__(self) -> None:
        for name in ('requests', 'tokens', 'concurrency'):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f'Rate limit {name} is a whole number of at least 1 or None; got {value!r}.'
                )
        if not self.window > 0:
            raise ConfigError(f'Rate limit window is a number of seconds above 0; got {self.window!r}.')

    @property
    def any(self) -> bool:
        return self.requests is not None or self.tokens is not None or self.concurrency is not None


@dataclass(frozen=True)
class Lease:
    """A reserved request: its id among those in flight and the tokens it reserved."""

    id: str
    tokens: int
    slot: float
    #: seconds the caller slept for its slot
    waited: float = 0.0
    #: when the slot came, on this process's ``time.monotonic()``
    due: float = 0.0


class Budget:
    """Reserve, release and pause a shared :class:`Limits` budget kept in a :class:`Record`.

    The record holds ``r``, ``k`` (the next free times for a request and for a token), ``b``
    (no request before it: a server asked for a pause) and ``f`` (leases in flight: id ->
    expiry, so a crashed process's leases lapse after ``lease_ttl`` seconds).
    """

    def __init__(
        self,
        record: Record,
        limits: Limits,
        *,
        lease_ttl: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.record, self.limits, self.lease_ttl, self.sleep = record, limits, lease_ttl, sleep

    @property
    def request_interval(self) -> float:
        limits = self.limits
        return 0.0 if limits.requests is None else limits.window * (1 + limits.margin) / limits.requests

    @property
    def token_interval(self) -> float:
        limits = self.limits
        if limits.tokens is None:
            return 0.0
        return limits.window * (1 + limits.margin) / (limits.tokens * (1 - limits.request_share))

    def max_request_tokens(self) -> int | None:
        """The most tokens one request should hold (None: no token limit)."""
        if self.limits.tokens is None:
            return None
        return max(1, int(self.limits.tokens * self.limits.request_share))

    def _state(self) -> tuple[str | None, dict[str, Any]]:
        raw = self.record.read()
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict):
            state = {}
        return raw, state

    def _write(self, raw: str | None, state: dict[str, Any]) -> bool:
        return self.record.swap(raw, json.dumps(state, separators=(',', ':')))

    def acquire(self, tokens: int = 0) -> Lease:
        """Reserve a slot for one request of ``tokens`` tokens and sleep until it comes."""
        limits = self.limits
        lease_id = uuid.uuid4().hex[:12]
        while True:
            raw, state = self._state()
            now = self.record.now()
            flying = {k: float(v) for k, v in dict(state.get('f') or {}).items() if float(v) > now}
            if limits.concurrency is not None and len(flying) >= limits.concurrency:
                self.sleep(max(0.005, min(0.05, min(flying.values()) - now)))
                continue
            slot = max(now, float(state.get('r', 0)), float(state.get('k', 0)), float(state.get('b', 0)))
            if limits.requests is not None:
                state['r'] = slot + self.request_interval
            if limits.tokens is not None:
                state['k'] = slot + tokens * self.token_interval
            if limits.concurrency is not None:
                flying[lease_id] = slot + self.lease_ttl
            state['f'] = flying
            if self._write(raw, state):
                break
        # measured again: the swap itself takes time (retries, a busy database), which must not
        # push the request past its slot
        wait = slot - self.record.now()
        due = time.monotonic() + wait
        if wait > 0:
            self.sleep(wait)
        return Lease(lease_id, tokens, slot, max(0.0, wait), due)

    @property
    def tolerance(self) -> float:
        """How late after its slot a request may leave (half the margin of a window)."""
        return self.limits.window * self.limits.margin / 2

    def on_time(self, lease: Lease) -> Lease:
        """``lease``, or a new one if the request is leaving more than :attr:`tolerance` after its
        slot (a process slowed down between the slot and the send: a late request would crowd
        the ones after it), or if a pause began after the slot was reserved (another process
        got a 429): the request takes the next free slot instead. One read of the record."""
        if self.limits.requests is None and self.limits.tokens is None:
            return lease
        late = time.monotonic() - lease.due > self.tolerance
        if not late and float(self._state()[1].get('b', 0)) <= lease.slot:
            return lease
        self.release(lease, lease.tokens)  # first: held while waiting, it could block every caller
        return self.acquire(lease.tokens)

    def release(self, lease: Lease, tokens: int | None = None) -> None:
        """The request of ``lease`` is over; ``tokens``: what it really used (the server's count),
        charged or refunded against the token budget."""
        extra = 0 if tokens is None or self.limits.tokens is None else tokens - lease.tokens
        if self.limits.concurrency is None and extra == 0:
            return
        while True:
            raw, state = self._state()
            flying = dict(state.get('f') or {})
            flying.pop(lease.id, None)
            state['f'] = flying
            if extra:
                state['k'] = float(state.get('k', 0)) + extra * self.token_interval
            if self._write(raw, state):
                return

    def pause(self, seconds: float) -> None:
        """No request of any process before ``seconds`` from now (a server's ``Retry-After``)."""
        until = self.record.now() + seconds  # from now, however long the swap takes to land
        while True:
            raw, state = self._state()
            if float(state.get('b', 0)) >= until:
                return
            state['b'] = until
            if self._write(raw, state):
                return


class LocalRecord:
    """A record in this process only (limits honoured by its threads, not by other processes)."""

    def __init__(self) -> None:
        self._value: str | None = None
        self._lock = threading.Lock()

    def read(self) -> str | None:
        return self._value

    def swap(self, old: str | None, new: str) -> bool:
        with self._lock:
            if self._value != old:
                return False
            self._value = new
            return True

    def now(self) -> float:
        return time.time()


_SWAP = """
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '' and current == false) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class RedisRecord:
    """A record in Redis (``redis://[:password@]host[:port][/db]``): GET, a compare-and-set
    script, and Redis's ``TIME``; spoken over one socket per process, no client package needed."""

    def __init__(self, url: str, key: str, *, ttl: int = 86400, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != 'redis' or not parts.hostname:
            raise ConfigError(
                f'The budget store {url!r} is not a Redis URL: write redis://host:6379/0, or set '
                "openai.budget to 'database' to keep budgets in the metadata store."
            )
        self.url, self.key, self.ttl, self.timeout = url, key, ttl, timeout
        self._address = (parts.hostname, parts.port or 6379)
        self._password = unquote(parts.password) if parts.password else None
        self._db = int(parts.path.strip('/') or 0)
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def read(self) -> str | None:
        value = self._call('GET', self.key)
        return None if value is None else value.decode()

    def swap(self, old: str | None, new: str) -> bool:
        return bool(self._call('EVAL', _SWAP, '1', self.key, old or '', new, str(self.ttl)))

    def now(self) -> float:
        seconds, micros = self._call('TIME')
        return int(seconds) + int(micros) / 1e6

    def _connect(self) -> None:
        self._sock = socket.create_connection(self._address, timeout=self.timeout)
        self._file = self._sock.makefile('rb')
        self._pid = os.getpid()
        if self._password is not None:
            self._send('AUTH', self._password)
        if self._db:
            self._send('SELECT', str(self._db))

    def _call(self, *args: str) -> Any:
        with self._lock:
            try:
                if self._sock is None or self._pid != os.getpid():  # a forked child opens its own
                    self._connect()
                return self._send(*args)
            except OSError as exc:
                self._sock = None
                raise ServiceError(
                    f'Redis at {self._address[0]}:{self._address[1]} (openai.budget) cannot be reached: '
                    f'{exc}. Start it, fix the URL, or set openai.budget to "database".',
                    status=None,
                    attempts=1,
                    retryable=True,
                ) from exc

    def _send(self, *args: str) -> Any:
        assert self._sock is not None
        out = [f'*{len(args)}\r\n'.encode()]
        for arg in args:
            data = arg.encode()
            out.append(b'$%d\r\n%s\r\n' % (len(data), data))
        self._sock.sendall(b''.join(out))
        return self._reply()

    def _reply(self) -> Any:
        line = self._file.readline()
        if not line:
            raise OSError('connection closed')
        kind, rest = line[:1], line[1:-2]
        if kind == b'+':
            return rest
        if kind == b'-':
            raise ServiceError(
                f'Redis answered {rest.decode()} (openai.budget).', status=None, attempts=1, retryable=False
            )
        if kind == b':':
            return int(rest)
        if kind == b'$':
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2]
        if kind == b'*':
            return [self._reply() for _ in range(int(rest))]
        raise OSError(f'unexpected reply {line[:20]!r}')
