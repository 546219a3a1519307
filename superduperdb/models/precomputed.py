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
from typing import Any, ClassVar

import numpy as np

from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import ComponentError, QueryError
from superduperdb.components.model import Model


@dataclass(kw_only=True)
class Precomputed(Model):
    """The model that produced a column of vectors; ``predict`` only checks and passes them on."""

    computes: ClassVar[bool] = False
    dimensions: int

    def before_add(self, db: Any) -> None:
        """Its outputs are float32 vectors of ``dimensions`` values: stored raw, or with the
        array encoder of exactly that dtype and shape (no other encoder can read them back)."""
        from superduperdb.encoders.numpy import ArrayEncoder

        super().before_add(db)
        if not isinstance(self.dimensions, int) or isinstance(self.dimensions, bool) or self.dimensions < 1:
            raise ComponentError(
                f'Precomputed {self.identifier!r}: dimensions must be a whole number >= 1, '
                f'got {self.dimensions!r}.'
            )
        encoder = self.encoder
        if encoder is None:
            return
        if (
            type(encoder) is not ArrayEncoder
            or encoder._dtype != np.dtype('float32')
            or list(encoder.shape) != [self.dimensions]
        ):
            raise ComponentError(
                f'Precomputed {self.identifier!r} passes on float32 vectors of {self.dimensions} values; its '
                f'encoder must be array("float32", {self.dimensions}) or none, not {encoder.identifier!r}.'
            )

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
