"""Any Python callable as a model: applied to each input (or to a whole batch).

>>> from superduperdb.models.function import FunctionModel
>>> FunctionModel('length', object=len).predict(['a', 'abc'])
[1, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from superduperdb.base.exceptions import ComponentError
from superduperdb.components.model import Model


@dataclass(kw_only=True)
class FunctionModel(Model):
    """Calls ``object(x)`` per input (``object(a, b)`` for ``X=('a', 'b')``), or
    ``object(batch)`` once when ``batched=True``."""

    batched: bool = False

    def before_add(self, db: Any) -> None:
        """A function model without a function would store a model that fails on every row."""
        super().before_add(db)
        if not callable(self.object):
            raise ComponentError(
                f'FunctionModel {self.identifier!r} has no function to call (object={self.object!r}); '
                'pass one: FunctionModel("name", object=len).'
            )

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        if self.batched:
            return list(self.object(list(inputs)))
        # a tuple input comes from a tuple key, X=('a', 'b'): one argument per key
        call = self.object
        return [call(*x) if type(x) is tuple else call(x) for x in inputs]
