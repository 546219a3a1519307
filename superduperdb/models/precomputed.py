"""Vectors a table already holds, declared as the outputs of the model that made them.

A watcher of a :class:`Precomputed` model computes nothing: a vector index over it reads
the column directly (no backfill, no copy into an output table). Adding the watcher checks
that every stored vector has ``dimensions`` values; a query vector given at that key is
checked the same way.

>>> clip = Precomputed('clip-vit-b32', dimensions=3)
>>> clip.predict([[1, 0, 0]])[0].tolist()
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import QueryError
from superduperdb.components.model import Model


@dataclass(kw_only=True)
class Precomputed(Model):
    """The model that produced a column of vectors; ``predict`` only checks and passes them on."""

    dimensions: int

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        return [self.vector(x) for x in inputs]

    def vector(self, value: Any, where: str = 'the query') -> np.ndarray:
        """``value`` as a float32 vector of ``dimensions`` values, or a clear error."""
        if isinstance(value, Encodable):
            value = value.x
        try:
            vector = np.asarray(value, dtype='float32')
        except (TypeError, ValueError) as exc:
            raise QueryError(f'{where} is not a vector of numbers ({exc}).') from exc
        if vector.shape != (self.dimensions,):
            raise QueryError(
                f'{where} has shape {vector.shape}; vectors of {self.identifier!r} have '
                f'{self.dimensions} values.'
            )
        return vector
