"""Per-process state that a child made by fork must renew.

A forked child (multiprocessing's fork start method, the default on Linux before Python 3.14;
gunicorn ``--preload``; Celery's prefork pool) starts as a copy of its parent: pooled database
connections whose sockets the parent goes on using, locks that another of the parent's threads
held at that moment (never released in the child: a deadlock), and records of threads that do
not exist there. What holds such state registers a callback that renews it in the child:

>>> import threading
>>> class Counter:
...     def __init__(self):
...         self.lock = threading.Lock()
...         in_child(self._forked)
...     def _forked(self):
...         self.lock = threading.Lock()
>>> _ = Counter()
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from types import MethodType

_callbacks: list[Callable[[], Callable[[], None] | None]] = []  # each gives the callback, or None once dead
_lock = threading.Lock()


def in_child(callback: Callable[[], None]) -> None:
    """Call ``callback`` in every child forked from now on. A bound method is held weakly: its
    object may be collected (then nothing is called); a function is held for good."""
    ref: Callable[[], Callable[[], None] | None] = (
        weakref.WeakMethod(callback) if isinstance(callback, MethodType) else lambda: callback
    )
    with _lock:
        _callbacks[:] = [r for r in _callbacks if r() is not None]  # drop the collected ones
        _callbacks.append(ref)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    for ref in list(_callbacks):
        callback = ref()
        if callback is not None:
            callback()


if hasattr(os, 'register_at_fork'):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork)
