"""Quiet third-party libraries while superduperdb stores or loads a component.

``db.add`` and ``db.load`` save and rebuild models; the libraries under them draw progress
bars ("Writing model shards", "Loading weights") and log advice that is about their own
internals, not about anything the user did. Inside :func:`quiet` those bars are off, the
libraries' loggers show errors only, and their warnings are not shown; everything is put
back afterwards. Only libraries already imported are touched: nothing is imported here.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: libraries whose warnings and advisory logs are theirs, not the user's, while loading
_LIBRARIES = ('transformers', 'sentence_transformers', 'huggingface_hub', 'duckdb_engine')


@contextmanager
def quiet() -> Iterator[None]:
    """Third-party progress bars, advisory logs and warnings off for the block.

    >>> with quiet():
    ...     pass
    """
    hf_logging = getattr(sys.modules.get('transformers.utils.logging'), 'is_progress_bar_enabled', None)
    bars_were_on = bool(hf_logging and hf_logging())
    module = sys.modules.get('transformers.utils.logging')
    if bars_were_on and module is not None:
        module.disable_progress_bar()
    loggers = [logging.getLogger(name) for name in _LIBRARIES if name in sys.modules]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for name in _LIBRARIES:
                warnings.filterwarnings('ignore', module=rf'{name}(\..*)?$')
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars_were_on and module is not None:
            module.enable_progress_bar()
