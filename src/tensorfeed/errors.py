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
