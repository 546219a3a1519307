"""Batches of model inputs that keep the matrix they were cut from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class StackedRows(Sequence[Any]):
    """A batch of arrays that are the rows of one stacked array, ``.stacked``.

    A sequence like any batch (each item a read-only row view, made when asked
    for); an adapter that feeds its model a matrix can take ``.stacked`` as it is
    instead of stacking the rows again. Slices keep the stacked array.
    """

    def __init__(self, stacked: Any) -> None:
        self.stacked = stacked

    def __len__(self) -> int:
        return len(self.stacked)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return StackedRows(self.stacked[index])
        return self.stacked[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.stacked)
