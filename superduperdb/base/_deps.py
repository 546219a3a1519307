"""Optional dependencies: import them where used, with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from superduperdb.base.exceptions import MissingDependencyError


def require(module: str, *, extra: str, what: str | None = None) -> ModuleType:
    """Import ``module``, or raise an error that names the extra to install.

    >>> np = require('numpy', extra='numpy')
    >>> np.__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split('.')[0]
        purpose = what or 'This feature'
        raise MissingDependencyError(
            f"{purpose} needs '{package}', which is not installed. "
            f"Install it with: pip install 'superduperdb[{extra}]'",
            package=package,
            extra=extra,
        ) from exc
