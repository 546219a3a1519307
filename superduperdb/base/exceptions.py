"""Errors raised by superduperdb.

Every error derives from :class:`SuperDuperError`; most also derive from the
builtin exception a Python user would expect, so ``except KeyError`` keeps
working where it makes sense::

    SuperDuperError
    ├── ConfigError(ValueError)              bad configuration value or URI
    ├── MissingDependencyError(ImportError)  an optional extra is not installed
    ├── BackendError                         the database said no
    │   ├── ConnectionFailed(ConnectionError) a server did not answer
    │   └── WriteFailed                      a write was rolled back
    ├── QueryError(ValueError)               a query or filter is malformed
    │   ├── InvalidName(ValueError)          a table/column/field name is unsafe
    │   ├── NotSupported(NotImplementedError) an operation this backend refuses (lake updates)
    │   └── JobNotFound(KeyError)            no job by that id
    ├── EncodingError(ValueError)            a value cannot be encoded/decoded
    │   ├── InvalidValue                     a value the database would not store as it is
    │   ├── UnsealedValue(PermissionError)   stored bytes that would run code, not sealed by us
    │   └── UnknownEncoder(KeyError)         data names an encoder not registered
    ├── ServiceError                         a remote model API failed (status, attempts)
    ├── CostNotConfirmed(PermissionError)    a backfill costs more than openai.confirm_cost_above
    ├── DatalayerClosed(RuntimeError)        a db used after db.close() (or its with block)
    ├── JobFailed                            a job failed (its traceback, possibly remote)
    │   └── ChangesNotHandled                captured changes whose jobs failed: kept, retried
    └── ComponentError
        ├── ComponentNotFound(KeyError)      no such component or version
        ├── ComponentNotAllowed(PermissionError) a class or setting not allowed here
        │   └── CodeNotTrusted               a client refuses to unpickle what a server sent
        ├── ArtifactCorrupted                stored artifact bytes do not match their hash
        └── ComponentInUse                   removal refused: others depend on it
"""

from __future__ import annotations

from superduperdb.base.masking import mask_secrets


class SuperDuperError(Exception):
    """Root of all superduperdb errors.

    Its message never shows a secret: messages often quote the URI or the setting they are
    about, and are printed, logged and sent to token holders, so the passwords and secret
    parameters in them are masked here, once for every error (see base/masking.py).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_secrets(a) if isinstance(a, str) else a for a in args))


class ConfigError(SuperDuperError, ValueError):
    """A configuration value or connection URI is not usable."""


class MissingDependencyError(SuperDuperError, ImportError):
    """An optional dependency (an install extra) is missing."""

    def __init__(self, message: str, *, package: str, extra: str) -> None:
        super().__init__(message)
        self.package = package
        self.extra = extra


class BackendError(SuperDuperError):
    """The database backend refused or failed an operation."""


class ConnectionFailed(BackendError, ConnectionError):
    """A database server could not be reached."""

    def __init__(self, message: str, *, host: str | None = None, port: int | None = None):
        super().__init__(message)
        self.host = host
        self.port = port


class WriteFailed(BackendError):
    """A write failed and was rolled back: nothing from that call was written.

    ``reason``: the database's own words, without the statement (None if not from the database).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class QueryError(SuperDuperError, ValueError):
    """A query, filter or update document is malformed."""


class NotSupported(QueryError, NotImplementedError):
    """An operation this backend refuses by design (updates and deletes on a lake's tables)."""


class InvalidName(QueryError):
    """A table, column or field name is not allowed."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class JobNotFound(QueryError, KeyError):
    """No job is recorded under that id."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id

    def __str__(self) -> str:
        return str(self.args[0])


class EncodingError(SuperDuperError, ValueError):
    """A value cannot be encoded for storage, or stored bytes cannot be decoded."""


class UnsealedValue(EncodingError, PermissionError):
    """Stored bytes of an encoder that runs code, which superduperdb did not seal: not decoded.

    See :mod:`superduperdb.datalayer.seal`; ``field`` names where the value was read.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidValue(EncodingError):
    """A value refused at write time because it would not come back as it was written.

    Raised before anything is written (see docs/concepts.md, "Values"): ``field`` names
    the field, ``row`` the position of the first such document in the write.
    """

    def __init__(self, message: str, *, field: str, row: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.row = row


class UnknownEncoder(EncodingError, KeyError):
    """Stored data names an encoder that is not registered in this database."""

    def __init__(self, message: str, *, identifier: str) -> None:
        super().__init__(message)
        self.identifier = identifier

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DatalayerClosed(SuperDuperError, RuntimeError):
    """A Datalayer was used after ``db.close()`` (or the end of its ``with superduper(...) as db:``
    block): its connections are gone, so the call would fail somewhere deeper, or open them again
    behind the user's back."""


class ServiceError(SuperDuperError):
    """A remote model service (an OpenAI-compatible API) failed after its retries.

    ``retryable`` says whether trying again later can help (rate limits, server errors).
    """

    def __init__(self, message: str, *, status: int | None, attempts: int, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


class CostNotConfirmed(SuperDuperError, PermissionError):
    """A backfill's estimated cost is above ``openai.confirm_cost_above`` and was not confirmed.

    ``cost`` is the estimate (USD), ``limit`` the setting.
    """

    def __init__(self, message: str, *, cost: float, limit: float) -> None:
        super().__init__(message)
        self.cost = cost
        self.limit = limit


class JobFailed(SuperDuperError):
    """A job ended in failure, here or on a cluster worker.

    ``job_id`` names it (see ``db.show('job')``); ``remote_traceback`` is the
    traceback recorded where it ran.
    """

    def __init__(self, message: str, *, job_id: str, remote_traceback: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = str(self.args[0])
        if self.remote_traceback:
            text += '\n\nTraceback where the job ran:\n' + self.remote_traceback.rstrip()
        return text


class ChangesNotHandled(JobFailed):
    """Changes captured on ``table`` whose jobs failed: they stay queued and are retried with backoff.

    Raised by change capture's handler to its change source; ``job_id`` names the first
    failed job, whose record holds the error (a retry helps once its cause is fixed).
    """

    def __init__(self, message: str, *, table: str, job_id: str, remote_traceback: str | None = None) -> None:
        super().__init__(message, job_id=job_id, remote_traceback=remote_traceback)
        self.table = table


class ComponentError(SuperDuperError):
    """A component cannot be added, loaded or removed."""


class ComponentNotFound(ComponentError, KeyError):
    """No component (or no such version of it) is registered."""

    def __init__(self, message: str, *, type_id: str, identifier: str, version: int | None = None):
        super().__init__(message)
        self.type_id = type_id
        self.identifier = identifier
        self.version = version

    def __str__(self) -> str:
        return str(self.args[0])


class ComponentNotAllowed(ComponentError, PermissionError):
    """A component config names a class that is not on the allow-list, or a setting only the
    operator may choose (docs/security.md)."""


class CodeNotTrusted(ComponentNotAllowed):
    """A client was sent something that only code can decode (a value of an encoder that runs
    code, a component's pickled artifacts) from a component it was not told to trust.

    ``identifier`` names that component; trusting it is ``Client(url, trust_code=[identifier])``.
    """

    def __init__(self, message: str, *, identifier: str) -> None:
        super().__init__(message)
        self.identifier = identifier


class ArtifactCorrupted(ComponentError):
    """An artifact's bytes do not hash to its key (changed, swapped or cut short): not loaded.

    ``key`` is the artifact's key (the SHA-256 it should have), ``component`` the component
    being loaded (``type_id/identifier/version``, None if unknown), ``store`` the artifact
    store it was read from (secrets masked).
    """

    def __init__(self, message: str, *, key: str, component: str | None, store: str) -> None:
        super().__init__(message)
        self.key = key
        self.component = component
        self.store = store


class ComponentInUse(ComponentError):
    """A component cannot be removed while something else depends on it."""

    def __init__(self, message: str, *, dependents: list[str]) -> None:
        super().__init__(message)
        self.dependents = dependents
