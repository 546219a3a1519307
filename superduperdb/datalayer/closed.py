"""What a closed Datalayer is: one whose operations raise :class:`DatalayerClosed`.

``db.close()`` swaps the Datalayer's class for one that mixes :class:`Closed` in, so an open
Datalayer pays nothing for the check (no test in every method); its attributes
(``databackend``, ``spec``) stay readable, for code that cleans up after it.

>>> from superduperdb import superduper, Collection
>>> db = superduper('sqlite:///:memory:')
>>> db.close()
>>> db.execute(Collection('docs').find())
Traceback (most recent call last):
...
superduperdb.base.exceptions.DatalayerClosed: db.execute: this database (...) was closed ...
>>> db.close()  # closing twice is harmless
"""

from __future__ import annotations

from typing import Any

from superduperdb.base.exceptions import DatalayerClosed


class Closed:
    """Mixed in before the Datalayer's class at close: its :attr:`OPERATIONS` raise
    :class:`DatalayerClosed`."""

    #: What a closed Datalayer refuses (:func:`operations` of its class).
    OPERATIONS: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).OPERATIONS:
            describe = object.__getattribute__(self, 'databackend').describe()
            raise DatalayerClosed(
                f'db.{name}: this database ({describe}) was closed (db.close(), or the end of its '
                '"with superduper(...) as db:" block). Open it again with superduper(uri), and '
                'use it inside the with block.'
            )
        return object.__getattribute__(self, name)

    def close(self) -> None:
        """Closing twice is harmless (a with block around a db closed inside it)."""


def operations(cls: type) -> frozenset[str]:
    """The public methods and properties of ``cls`` (but ``close``): what a closed one refuses."""
    return frozenset(
        name
        for name, value in vars(cls).items()
        if not name.startswith('_') and name != 'close' and (callable(value) or isinstance(value, property))
    )
