"""The exceptions tensorfeed raises. Every one derives from :class:`TensorfeedError`.

Each also derives from the built-in exception a caller would naturally catch (``ValueError``,
``KeyError``, ``ImportError`` ...), so ``except ValueError`` keeps working for code that predates us.
Messages name the thing that is wrong (column, file, offset, row key) and never carry credentials.
"""

from __future__ import annotations


class TensorfeedError(Exception):
    """Base class of every error raised by tensorfeed."""


class ConfigError(TensorfeedError, ValueError):
    """An argument or option is invalid (wrong type, conflicting options, bad fraction ...)."""


class NotFoundError(TensorfeedError, LookupError):
    """A table, column, file, bucket, topic or class folder does not exist."""


class DataError(TensorfeedError, ValueError):
    """A value in the data cannot be used: a NULL or non-numeric feature, a duplicate key, a corrupt
    file or message. The message names the column and the row (key, file + row, or offset)."""


class SourceChangedError(TensorfeedError, RuntimeError):
    """The data changed under a running epoch (a lake file replaced, a snapshot expired)."""


class ConnectionFailedError(TensorfeedError, ConnectionError):
    """A server could not be reached or refused the credentials (no secret in the message)."""


class StateError(TensorfeedError, ValueError):
    """A state dict that does not belong to this loader or dataset."""


class MissingDependencyError(TensorfeedError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class NoDeviceError(TensorfeedError, RuntimeError):
    """An accelerator was asked for and none is available."""


class TransientError(TensorfeedError):
    """A failure that may go away when the same read is tried again: the connection was lost
    mid-read (:class:`ConnectionLostError`) or the server cancelled a statement
    (:class:`StatementTimeoutError`). Retry these; the other errors need a change of input."""


class ConnectionLostError(ConnectionFailedError, TransientError):
    """An established connection ended mid-read: the server restarted or closed it, or an
    administrator ended the session (``pg_terminate_backend``, SQLSTATE 57P01)."""


class StatementTimeoutError(TransientError, TimeoutError):
    """The server cancelled a statement that ran past its ``statement_timeout`` (SQLSTATE 57014)
    or ``lock_timeout``; the message names the limit (``statement_timeout=200ms``) when known.
    Retrying may succeed on a less busy server; a statement that is slow by itself needs a
    longer timeout (``?options=-c%20statement_timeout%3D...`` in the URL) or a cheaper query."""
