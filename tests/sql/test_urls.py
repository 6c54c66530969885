"""SQL URLs mean what SQLAlchemy and libpq say they mean; their display form hides passwords."""

from __future__ import annotations

import sqlite3
from urllib.parse import quote, urlsplit

import pytest

import tensorfeed as tfd
from tensorfeed.sources.sql import display_url, parse_url

TIMEOUT_QUERY = "SELECT current_setting('statement_timeout') AS t, 1 AS id"


def _with_options(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _socket_in_host(pg_url: str) -> str:
    """The pgserver URL (``postgres:@/postgres?host=/dir``) with the socket dir as ``%2Fdir``."""
    parts = urlsplit(pg_url)
    sock = dict(p.split("=", 1) for p in parts.query.split("&"))["host"]
    return f"postgresql://postgres@{quote(sock, safe='')}{parts.path}"


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize("url", ["sqlite://tmp/x.db", "sqlite+pysqlite://data/x.db"])
def test_sqlite_url_with_a_host_is_refused_with_the_right_spellings(url):
    with pytest.raises(tfd.ConfigError) as info:
        tfd.SQLDataset(url, table="t", key="id")
    msg = str(info.value)
    assert "sqlite:///relative/x.db" in msg and "sqlite:////abs/path/x.db" in msg
    assert "host" in msg and "\n" not in msg


def test_sqlite_relative_and_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "x.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    c.close()
    monkeypatch.chdir(tmp_path)
    rel = tfd.SQLDataset("sqlite:///sub/x.db", table="t", key="id", keep_in_memory=False)
    absolute = tfd.SQLDataset(f"sqlite:///{path}", table="t", key="id", keep_in_memory=False)
    assert str(path).startswith("/") and f"sqlite:///{path}".startswith("sqlite:////")
    assert len(rel) == len(absolute) == 5
    assert rel.db.path == absolute.db.path == str(path)


# --------------------------------------------------------------------------- options reach libpq


@pytest.mark.parametrize(
    "options",
    [
        "options=-c%20statement_timeout%3D200",  # percent-encoded, as libpq documents it
        "options=-c+statement_timeout%3D200",  # form-encoded: SQLAlchemy reads '+' as a space
        "options=-c%20statement_timeout%3D200ms&application_name=tfd%20urls",
    ],
)
def test_connection_options_reach_the_server_byte_for_byte(pg_db, options):
    url = _with_options(pg_db.url, options)
    ds = tfd.SQLDataset(url, query=TIMEOUT_QUERY, key="id", keep_in_memory=False)
    assert ds[0]["t"] == "200ms"
    st = tfd.SQLStream(url, query=TIMEOUT_QUERY, key="id")
    assert [r["t"] for r in st] == ["200ms"]
    # from_url strips tensorfeed's own options and rebuilds the URL: the options survive it
    q = quote(TIMEOUT_QUERY, safe="")
    again = tfd.SQLDataset.from_url(_with_options(url, f"query={q}&key=id"), keep_in_memory=False)
    assert again[0]["t"] == "200ms"
    again_st = tfd.SQLStream.from_url(_with_options(url, f"query={q}&key=id"))
    assert [r["t"] for r in again_st] == ["200ms"]


def test_application_name_with_a_space_reaches_the_server(pg_db):
    url = _with_options(pg_db.url, "application_name=tfd%20urls%20test")
    q = "SELECT current_setting('application_name') AS a, 1 AS id"
    assert tfd.SQLDataset(url, query=q, key="id", keep_in_memory=False)[0]["a"] == "tfd urls test"


def test_socket_directory_in_the_host_part_connects(pg_db):
    url = _socket_in_host(pg_db.url)
    ds = tfd.SQLDataset(url, query=TIMEOUT_QUERY, key="id", keep_in_memory=False)
    assert len(ds) == 1


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    "url, char, code",
    [
        ("postgresql://u:p@ss@127.0.0.1/db", "@", "%40"),
        ("postgresql://u:pa@@127.0.0.1:5432/db", "@", "%40"),
        ("postgresql://u:a/b@host/db", "/", "%2F"),
        ("postgresql://us@r:secret@host/db", "@", "%40"),
    ],
)
def test_unencoded_characters_in_the_password_get_a_hint(url, char, code):
    for make in (tfd.SQLDataset, tfd.SQLStream):
        with pytest.raises(tfd.ConfigError) as info:
            make(url, table="t", key="id")
        msg = str(info.value)
        assert f"'{char}' as {code}" in msg and "percent-encode" in msg
        for secret in ("p@ss", "ss@", "a/b", "pa@", "secret"):
            assert secret not in msg
    assert "ss@" not in display_url(url) and "a/b" not in display_url(url)


def test_percent_encoded_password_is_accepted_and_decoded():
    secret = "p@ss:w/rd"
    db, _ = parse_url(f"postgresql://u:{quote(secret, safe='')}@127.0.0.1:5432/db")
    assert db.password == secret
    assert secret not in db.safe and quote(secret, safe="") not in db.safe
    assert db.safe == "postgresql://u:***@127.0.0.1:5432/db"
    # a ':' needs no encoding (RFC 3986 userinfo; SQLAlchemy and libpq split at the first one)
    db, _ = parse_url("postgresql://u:pa:ss@127.0.0.1/db")
    assert db.password == "pa:ss" and "pa:ss" not in db.safe


def test_password_option_is_hidden_and_scrubbed():
    db, _ = parse_url("postgresql://u@127.0.0.1:1/db?password=Hunter2pw&sslmode=disable")
    assert db.safe == "postgresql://u@127.0.0.1:1/db?password=***&sslmode=disable"
    with pytest.raises(tfd.ConnectionFailedError) as info:
        tfd.SQLDataset("postgresql://u@127.0.0.1:1/db?password=Hunter2pw", table="t", key="id")
    assert "Hunter2pw" not in str(info.value)


def test_empty_password_is_not_shown_as_hidden(pg_db):
    assert ":@" in pg_db.url  # pgserver's URL: postgres:@/postgres?host=/dir
    table = pg_db.make_items(5)
    ds = tfd.SQLDataset(pg_db.url, table=table, key="id")
    st = tfd.SQLStream(pg_db.url, table=table, key="id")
    with pytest.raises(tfd.NotFoundError) as info:
        tfd.SQLDataset(pg_db.url, table="no_such_table_here", key="id")
    for text in (repr(ds), ds.describe(), repr(st), str(info.value), display_url(pg_db.url)):
        assert "***" not in text and ":@" not in text
        assert "postgresql://postgres@/postgres?host=/" in text


# --------------------------------------------------------------------------- display form


def test_socket_directory_reads_the_same_everywhere(pg_db):
    in_query, in_host = pg_db.url.replace("postgres:@", "postgres@"), _socket_in_host(pg_db.url)
    assert display_url(in_query) == display_url(in_host)
    table = pg_db.make_items(5)
    a = tfd.SQLDataset(in_query, table=table, key="id")
    b = tfd.SQLDataset(in_host, table=table, key="id")
    assert repr(a) == repr(b) and a.describe() == b.describe()
    assert repr(tfd.SQLStream(in_query, table=table)) == repr(tfd.SQLStream(in_host, table=table))
    errors = []
    for url in (in_query, in_host):
        with pytest.raises(tfd.NotFoundError) as info:
            tfd.SQLDataset(url, table="nope_not_here", key="id")
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "?host=/" in errors[0]


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://u:s3cret@db.example:5433/app", "postgresql://u:***@db.example:5433/app"),
        ("postgresql://u:@db.example/app", "postgresql://u@db.example/app"),
        ("postgresql://u@%2Fvar%2Frun%2Fpg/app", "postgresql://u@/app?host=/var/run/pg"),
        ("postgresql://u@/app?host=%2Fvar%2Frun%2Fpg", "postgresql://u@/app?host=/var/run/pg"),
        ("postgresql://u@/app?host=/var/run/pg", "postgresql://u@/app?host=/var/run/pg"),
        ("postgresql+psycopg://u:s3cret@[::1]/app", "postgresql+psycopg://u:***@[::1]/app"),
        ("postgresql://u@h/app?password=s3cret", "postgresql://u@h/app?password=***"),
        ("postgresql://u:s3c@ret@h/app", "postgresql://u:***@h/app"),
        ("sqlite:///rel/x.db?table=t", "sqlite:///rel/x.db?table=t"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("::not a url::", "::not a url::"),
        ("weird://u:s3cret@h:port:x/a b", "weird://***@h:port:x/a b"),
    ],
)
def test_display_url(url, shown):
    assert display_url(url) == shown
    assert "s3cret" not in display_url(url) and "ret@" not in display_url(url)


def test_display_url_is_stable():
    for url in ("postgresql://u:pw@h/db?options=-c%20a%3D1", "postgresql://u@%2Ftmp/db"):
        once = display_url(url)
        assert display_url(once) == once
