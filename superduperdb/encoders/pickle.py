"""Any picklable Python object.

Unpickling runs code chosen by whoever wrote the bytes: only read pickled
values from databases you trust.

>>> from superduperdb.encoders.pickle import pickle_encoder
>>> pickle_encoder.decode(pickle_encoder.encode({'a': (1, 2)}))
{'a': (1, 2)}
"""

from __future__ import annotations

import pickle as _pickle
from dataclasses import dataclass
from typing import Any

from superduperdb.components.encoder import BaseEncoder


@dataclass(kw_only=True)
class PickleEncoder(BaseEncoder):
    """Stores a value with :mod:`pickle` (protocol 5)."""

    def encode(self, x: Any) -> bytes:
        return _pickle.dumps(x, protocol=5)

    def decode(self, b: bytes) -> Any:
        return _pickle.loads(b)


pickle_encoder = PickleEncoder('pickle')
#: The seed's name for it: ``from superduperdb.encoders.pickle import pickle``.
pickle = pickle_encoder
