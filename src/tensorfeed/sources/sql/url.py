"""SQL URLs: what a ``postgresql://`` or ``sqlite:///`` URL means, and how to show one safely.

``parse_url`` reads a SQLAlchemy-style URL the way libpq does (percent-encoding, socket
directories, ``options=``) into a :class:`Database` and the dataset options of its query string
(``table``, ``key`` ...); ``display_url`` is the form without a password that every message uses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as _urlquote
from urllib.parse import unquote as _urlunquote

from ...errors import ConfigError

_OPTIONS = ("table", "query", "key", "columns", "features", "target")


_STREAM_INT_OPTIONS = ("shuffle_buffer", "seed", "chunk_rows")


_LIST_OPTIONS = ("columns", "features")


@dataclass(frozen=True)
class Database:
    """Where to read: backend, connection URL (with its password, never shown) and a safe name."""

    backend: str
    url: str = field(repr=False)
    safe: str
    password: str = field(default="", repr=False)
    path: str | None = None
    settings: tuple[tuple[str, str], ...] = ()  # server settings the URL's options= sets

    def scrub(self, text: str) -> str:
        """``text`` with the password (plain or URL-quoted) replaced by ``***``."""
        if self.password:
            for form in {self.password, _urlquote(self.password), _urlquote(self.password, "")}:
                text = text.replace(form, "***")
        return text


_SECRET_OPTIONS = ("password", "sslpassword")


_ENCODE_HINT = (
    "percent-encode these characters in the user name and password: '@' as %40, ':' as %3A, "
    "'/' as %2F (urllib.parse.quote(password, safe=''))"
)


def _make_url(url: Any) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(
            "cannot parse the database URL; expected e.g. postgresql://user@host/db or "
            "sqlite:///path.db"
        ) from None


def _query_pairs(u: Any) -> list[tuple[str, str]]:
    """The URL's query options in order; a repeated option (``host=a&host=b``) once, joined by
    commas as libpq spells a list."""
    return [(k, ",".join(v) if isinstance(v, tuple) else str(v)) for k, v in u.query.items()]


def _socket_dir(u: Any) -> str | None:
    host = _urlunquote(u.host or "")
    return host if host.startswith("/") else None


def _render(u: Any, *, secret: bool, drivername: str | None = None) -> str:
    """``u`` as a URL that SQLAlchemy and libpq both read back the same: every part
    percent-encoded (a space as %20, never ``+``). With ``secret=False`` a non-empty password is
    ``***`` and a socket directory is shown as ``?host=/dir``, however the URL spelled it."""
    name = drivername or u.drivername
    if name.startswith("sqlite"):
        q = "&".join(f"{_urlquote(k, '')}={_urlquote(v, '/:,')}" for k, v in _query_pairs(u))
        path = (u.database or "").replace("%", "%25").replace("?", "%3F")  # as SQLAlchemy reads
        return f"{name}:///{path}" + (f"?{q}" if q else "")
    query = _query_pairs(u)
    host, hidden = u.host or "", bool(u.password)
    if "@" in host and not secret:  # part of an unencoded password (parse_url refuses it)
        host, hidden = host.rpartition("@")[2], True
    sock = _socket_dir(u)
    if sock is not None:
        if secret:
            host = _urlquote(sock, "")
        else:
            host = ""
            query.insert(0, ("host", sock))
    elif ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = ""
    if u.username:
        netloc = _urlquote(u.username, "")
    if hidden:
        netloc += ":" + (_urlquote(u.password, "") if secret else "***")
    if netloc:
        netloc += "@"
    netloc += host + (f":{u.port}" if u.port is not None else "")
    safe = "" if secret else "/:,*"
    if not secret:
        query = [(k, "***" if k in _SECRET_OPTIONS and v else v) for k, v in query]
    q = "&".join(f"{_urlquote(k, '')}={_urlquote(v, safe)}" for k, v in query)
    db = _urlquote(u.database, "") if u.database else ""
    return f"{name}://{netloc}/{db}" + (f"?{q}" if q else "")


def display_url(url: str) -> str:
    """The form of a SQL URL that is safe to show: a non-empty password (before the host or as
    ``password=``) reads ``***``, an empty one nothing; a socket directory reads ``?host=/dir``
    whether it was given that way or as ``%2Fdir`` in the host part. Never raises: text that
    cannot be parsed is shown with everything between ``://`` and its last ``@`` hidden."""
    try:
        u = _make_url(url)
    except ConfigError:
        text = str(url)
        scheme, sep, rest = text.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.rpartition('@')[2]}"
        return text
    return _render(u, secret=False)


def _check_userinfo(text: str, u: Any) -> None:
    """Refuse a user name or password whose ``@`` or ``/`` is not percent-encoded: SQLAlchemy
    and libpq split such a URL in different places (libpq ends the user part at the first ``@``
    or ``/``), so it has no single meaning. The password is never echoed."""
    rest = text.partition("://")[2]
    user, pw = u.username or "", u.password or ""
    if "@" in (u.host or "") or ("@" in user and rest.startswith(user)):
        raise ConfigError(f"the database URL has an unencoded '@' before the host; {_ENCODE_HINT}")
    if "/" in pw and f":{pw}@" in rest:
        raise ConfigError(f"the database URL has an unencoded '/' in its password; {_ENCODE_HINT}")


def _check_sqlite(u: Any) -> str:
    if u.host or u.port or u.username or u.password:
        raise ConfigError(
            f"a SQLite URL has no host: {u.drivername}://{_urlquote(u.host or '')}/... reads "
            f"{u.host!r} as a host name; write sqlite:///relative/x.db (three slashes) or "
            "sqlite:////abs/path/x.db (four)"
        )
    path = u.database
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        raise ConfigError(
            "an in-memory SQLite database cannot be shared with DataLoader workers; "
            "write it to a file and use sqlite:///path/to/file.db"
        )
    return os.path.abspath(path)


def _pg_settings(options: str) -> tuple[tuple[str, str], ...]:
    """``-c name=value`` / ``--name=value`` pairs of a libpq ``options`` string."""
    found = re.findall(r"(?:-c\s*|--)([A-Za-z_.]+)=(\S+)", options)
    return tuple((k.replace("-", "_").lower(), v) for k, v in found)


def parse_url(url: Any) -> tuple[Database, dict[str, str]]:
    """A SQLAlchemy-style URL -> (Database, options from its query string such as ``table``)."""
    u = _make_url(url)
    backend = u.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in ("postgresql", "sqlite"):
        raise ConfigError(
            f"unsupported database URL scheme {u.drivername!r}: tensorfeed's SQL sources read "
            "postgresql:// (and postgresql+<driver>://) and sqlite:/// URLs"
        )
    _check_userinfo(str(url), u)
    names = (*_OPTIONS, *_STREAM_INT_OPTIONS)
    options = {k: str(v) for k, v in u.query.items() if k in names}
    u = u.difference_update_query(list(options))
    if backend == "sqlite":
        path = _check_sqlite(u)
        safe = _render(u.set(database=path), secret=False)
        return Database("sqlite", f"sqlite:///{path}", safe, "", path), options
    query = dict(_query_pairs(u))
    password = u.password or query.get("password", "")
    conn = _render(u, secret=True, drivername="postgresql")
    settings = _pg_settings(query.get("options", ""))
    safe = _render(u, secret=False)
    return Database("postgresql", conn, safe, password, None, settings), options


def _url_options(options: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k in _LIST_OPTIONS:
            out[k] = [c.strip() for c in v.split(",") if c.strip()]
        elif k in _STREAM_INT_OPTIONS:
            try:
                out[k] = int(v)
            except ValueError:
                raise ConfigError(f"URL option {k}={v!r} must be an integer") from None
        else:
            out[k] = v
    out.update(overrides)
    return out


def _strip_options(url: Any, options: Mapping[str, str]) -> str:
    return _render(_make_url(url).difference_update_query(list(options)), secret=True)
