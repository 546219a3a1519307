"""Admission: how many requests the server handles at once, and what the others get.

Each request the server handles runs on a thread and may hold up to two database connections
at once (:data:`~superduperdb.backends.uri.CONNECTIONS_PER_REQUEST`). Without a bound,
50 clients on a cold server put 40 requests on threads against a pool of 15 connections: the
searches each held one while they waited for the one request building the vector engine, which
needed a second; every request waited SQLAlchemy's 30 s for a connection, and failed with 500.

So a request is handled only once it has a *turn*: ``CFG.server.max_concurrency`` turns (at
most what the database pool can serve, see :func:`~superduperdb.backends.uri.connections_needed`).
The others wait in the event loop, holding no thread and no connection, first come first
served, for at most ``CFG.server.queue_timeout`` seconds, and are then answered 503
(:class:`~superduperdb.server.errors.Overloaded`) with ``Retry-After``: nothing was done, send
it again. A write waiting for the server's write lock gives its turn back while it waits (it
holds no connection then), so reads are not held up behind a queue of writes; it waits no
longer than its request's deadline either. Until the server's start-up work is done (a
``serve`` loads the models and builds the vector engines once, see ``_warm_up`` in app.py),
requests wait for it the same way.

>>> import asyncio
>>> turns = Turns(1)
>>> asyncio.run(turns.enter(timeout=0.1)), asyncio.run(turns.enter(timeout=0.1))
(True, False)
>>> turns.leave(); asyncio.run(turns.enter(timeout=0.1))
True
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from superduperdb.server.errors import Overloaded

#: Seconds a client is told to wait before sending a shed request again.
RETRY_AFTER_S = 1
#: Worker threads kept per turn (see :func:`_enough_threads`).
THREADS_PER_TURN = 4


@dataclass(eq=False)
class _Waiter:
    """One request waiting for a turn: woken through its event loop or its thread's event."""

    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    event: threading.Event = field(default_factory=threading.Event)
    granted: bool = False

    def wake(self) -> None:
        self.granted = True
        if self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        else:
            self.event.set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Turns:
    """A first-come-first-served semaphore that both the event loop (``await enter``) and
    threads (``enter_blocking``) wait on: a turn given back goes to the longest waiter."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _take_now(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def enter(self, timeout: float) -> bool:
        """Wait (in the event loop) up to ``timeout`` seconds for a turn; whether one was had."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take_now():
                return True
            waiter = _Waiter(loop=loop, future=loop.create_future())
            self._waiters.append(waiter)
        assert waiter.future is not None
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            return True
        except TimeoutError:
            return self._gave_up(waiter)
        except asyncio.CancelledError:  # the client went away while it waited
            if self._gave_up(waiter):
                self.leave()
            raise

    def enter_blocking(self, timeout: float) -> bool:
        """Wait (on this thread) up to ``timeout`` seconds (``inf``: as long as it takes) for a
        turn; whether one was had."""
        with self._lock:
            if self._take_now():
                return True
            if timeout <= 0:
                return False
            waiter = _Waiter()
            self._waiters.append(waiter)
        if waiter.event.wait(None if timeout == float('inf') else timeout):
            return True
        return self._gave_up(waiter)

    def _gave_up(self, waiter: _Waiter) -> bool:
        """A waiter's time ran out: True if it was given the turn meanwhile (it holds it)."""
        with self._lock:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            return False

    def leave(self) -> None:
        """Give a turn back: to the longest waiter, if any."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().wake()
            else:
                self._free += 1


@dataclass(eq=False)
class Turn:
    """A request's place: the turns it draws on, when its waiting must end, whether it holds one."""

    turns: Turns
    deadline: float  # time.monotonic() by which the request is handled or answered 503
    held: bool = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def step_aside(self) -> None:
        """Give the turn back while this request waits for something that needs no connection."""
        if self.held:
            self.held = False
            self.turns.leave()

    def resume(self) -> bool:
        """Take a turn again (on this thread), waiting no later than the deadline."""
        if not self.held:
            self.held = self.turns.enter_blocking(self.remaining())
        return self.held


#: The turn of the request this code runs for (copied into the request's worker thread).
_current: contextvars.ContextVar[Turn | None] = contextvars.ContextVar('superduperdb_turn', default=None)


def current_turn() -> Turn | None:
    return _current.get()


def overloaded(what: str) -> Overloaded:
    return Overloaded(
        f'The server is busy: {what}. Nothing was done; send the request again after '
        f'{RETRY_AFTER_S} s (Retry-After). Operators: see server.max_concurrency and '
        'server.queue_timeout (docs/server.md).',
        retry_after=RETRY_AFTER_S,
    )


class WriteLock:
    """The server's write lock: writes one at a time, first come first served, reentrant.

    A request that must wait for it gives its turn back while it waits (it holds no database
    connection then) and waits no later than its deadline; past it, :class:`Overloaded`. Used
    outside a request (tests, start-up), it waits as long as it takes.
    """

    def __init__(self) -> None:
        self._turns = Turns(1)
        self._owner: int | None = None
        self._depth = 0

    def __enter__(self) -> WriteLock:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return self
        turn = current_turn()
        if turn is None:
            self._turns.enter_blocking(float('inf'))
        elif not self._turns.enter_blocking(0):
            turn.step_aside()
            if not self._turns.enter_blocking(turn.remaining()):
                raise overloaded(
                    'writes run one at a time, and this one waited for its turn until its deadline'
                )
            if not turn.resume():
                self._turns.leave()
                raise overloaded(
                    'a write had its turn at the write lock, but no request slot came free in time'
                )
        self._owner, self._depth = me, 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``threading.RLock.acquire`` (no deadline, no turn given back): for code that
        holds the lock outside a request."""
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        wait = 0.0 if not blocking else float('inf') if timeout < 0 else timeout
        if not self._turns.enter_blocking(wait):
            return False
        self._owner, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError('cannot release a write lock this thread does not hold')
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._turns.leave()


class Admission:
    """ASGI middleware: a request is handled once it has a turn (see the module docstring).

    ``ready``: set when the server's start-up work is done (see ``warm_up`` in app.py); until
    then a request waits for it, no longer than its deadline. ``GET /health`` never waits: a
    load balancer asks it to learn whether the process is up.
    """

    def __init__(
        self,
        app: Any,
        turns: Turns,
        timeout: float,
        ready: threading.Event | None = None,
        exempt: tuple[str, ...] = ('/health',),
    ) -> None:
        self.app, self.turns, self.timeout, self.exempt = app, turns, timeout, exempt
        self.ready = ready
        self._threads_set = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope['type'] != 'http' or scope.get('path') in self.exempt:
            await self.app(scope, receive, send)
            return
        if not self._threads_set:
            self._threads_set = True
            _enough_threads(self.turns.size)
        turn = Turn(self.turns, time.monotonic() + self.timeout)
        if not await self._started(turn):
            await _refuse(
                send,
                overloaded(
                    f'it is starting (loading models, building vector indexes) '
                    f'and this request waited {self.timeout:g} s'
                ),
            )
            return
        turn.held = await self.turns.enter(turn.remaining())
        if not turn.held:
            what = f'{self.turns.size} requests are being handled, and this one waited {self.timeout:g} s'
            await _refuse(send, overloaded(what))
            return
        token = _current.set(turn)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
            if turn.held:
                turn.held = False
                self.turns.leave()

    async def _started(self, turn: Turn) -> bool:
        """Wait (polling, holding nothing) for the start-up work, at most until the deadline."""
        while self.ready is not None and not self.ready.is_set():
            if turn.remaining() <= 0:
                return False
            await asyncio.sleep(min(0.05, turn.remaining()))
        return True


def _enough_threads(turns: int) -> None:
    """Let the event loop's worker threads (40 by default) outnumber the turns: writes waiting
    for the write lock hold a thread without a turn, and a request with a turn must never wait
    for a thread."""
    import anyio.to_thread

    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, THREADS_PER_TURN * turns + 8)


async def _refuse(send: Any, error: Overloaded) -> None:
    from superduperdb.server import wire

    body = json.dumps(wire.error_body(type(error).__name__, str(error))).encode()
    headers = [
        (b'content-type', b'application/json'),
        (b'content-length', str(len(body)).encode()),
        (b'retry-after', str(int(error.retry_after)).encode()),
    ]
    await send({'type': 'http.response.start', 'status': 503, 'headers': headers})
    await send({'type': 'http.response.body', 'body': body})
