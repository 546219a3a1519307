"""Where change capture stands, for ``superduperdb status``, ``GET /status`` and the dashboard.

>>> from superduperdb import superduper
>>> capture_status(superduper('sqlite:///:memory:'))
{'running': False, 'error': None, 'positions': []}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


def capture_status(db: Datalayer) -> dict[str, Any]:
    """``running``: whether change capture runs in this process (``db.cdc.start()``; a
    ``superduperdb cdc`` process elsewhere shows as positions that keep moving), ``error``:
    its last error, and ``positions``: each persisted stream position (``stream``,
    ``position``, ``updated_at``: when it last moved, seconds since the epoch)."""
    from superduperdb.base.masking import mask_secrets  # a driver's error may quote the URI

    cdc = db._cdc
    error = None if cdc is None else cdc.error
    return {
        'running': bool(cdc is not None and cdc.running),
        'error': mask_secrets(error) if error else error,
        'positions': [
            {'stream': r['_id'], 'position': r['position'], 'updated_at': r.get('updated_at')}
            for r in db.metadata.positions()
        ],
    }
