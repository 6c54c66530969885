"""Bad input gets a clear error naming the culprit, loses nothing, and never shows a password."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest

import tensorfeed as tfd

INJECTION = "orders; DROP TABLE users; --"


def test_missing_table(db):
    for make in (tfd.SQLDataset, tfd.SQLStream):
        with pytest.raises(tfd.NotFoundError, match="no_such_table"):
            ds = make(db.url, table="no_such_table", key="id")
            next(iter(ds))  # a stream connects when iterated


def test_missing_table_in_query(db):
    with pytest.raises(tfd.NotFoundError, match="no_such_table"):
        tfd.SQLDataset(db.url, query="SELECT * FROM no_such_table", key="id")


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"key": "nope"}, "nope"),
        ({"key": "id", "columns": ["v", "ghost"]}, "ghost"),
        ({"key": "id", "features": ["v", "phantom"], "target": "label"}, "phantom"),
        ({"key": "id", "features": ["v"], "target": "missing_target"}, "missing_target"),
    ],
)
def test_missing_column(items, kwargs, culprit):
    db, table = items
    with pytest.raises(tfd.NotFoundError, match=culprit):
        tfd.SQLDataset(db.url, table=table, **kwargs)
    with pytest.raises(tfd.NotFoundError, match=culprit):
        next(iter(tfd.SQLStream(db.url, table=table, **kwargs)))


def test_missing_column_in_query(items):
    db, table = items
    with pytest.raises(tfd.NotFoundError, match="nonexistent_col"):
        tfd.SQLDataset(db.url, query=f'SELECT id, nonexistent_col FROM "{table}"', key="id")


def test_non_unique_key_at_construction(items):
    db, table = items
    with pytest.raises(tfd.DataError, match=r"'label'.*not unique.*\b[01]\b"):
        tfd.SQLDataset(db.url, table=table, key="label")
    with pytest.raises(tfd.DataError, match=r"'s'.*not unique.*'s1'"):
        tfd.SQLDataset(
            db.url, query=f"SELECT id, s FROM \"{table}\" UNION ALL SELECT 999999, 's1'", key="s"
        )


def test_null_key(items):
    db, table = items
    db.execute(f'UPDATE "{table}" SET s = NULL WHERE id = 3')
    with pytest.raises(tfd.DataError, match=r"'s'.*NULL"):
        tfd.SQLDataset(db.url, table=table, key="s")


def test_null_feature_names_column_and_key(items):
    db, table = items
    db.execute(f'UPDATE "{table}" SET v = NULL WHERE id = 1234')
    ds = tfd.SQLDataset(db.url, table=table, key="id", features=["v"], target="label")
    ds[1233]  # other rows are fine
    for get in (lambda: ds[1234], lambda: next(iter(tfd.DataLoader(ds, batch_size=len(ds))))):
        with pytest.raises(tfd.DataError, match=r"'v'.*NULL.*id=1234"):
            get()
    st = tfd.SQLStream(db.url, table=table, key="id", features=["v"], target="label")
    with pytest.raises(tfd.DataError, match=r"'v'.*NULL.*id=1234"):
        list(tfd.DataLoader(st, batch_size=500))


def test_non_numeric_feature_names_column_and_key(db):
    name = f"mixed_{db.kind}"
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    if db.kind == "sqlite":  # SQLite stores text in a REAL column without complaint
        db.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, x REAL, y INTEGER)')
        rows = [(i, float(i), i % 2) for i in range(50)] + [(50, "abc", 0)]
        culprit = r"'x'.*'abc'.*id=50"
    else:  # PostgreSQL: a text column used as a feature
        db.execute(f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, x TEXT, y INTEGER)')
        rows = [(i, f"t{i}", i % 2) for i in range(51)]
        culprit = r"'x'.*(not numeric|non-numeric).*id=\d+"
    db.executemany(f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph}, {db.ph})', rows)
    ds = tfd.SQLDataset(db.url, table=name, key="id", features=["x"], target="y")
    with pytest.raises(tfd.DataError, match=culprit):
        next(iter(tfd.DataLoader(ds, batch_size=64)))
    with pytest.raises(tfd.DataError, match=culprit):
        ds[50]
    st = tfd.SQLStream(db.url, table=name, key="id", features=["x"], target="y")
    with pytest.raises(tfd.DataError, match=culprit):
        list(tfd.DataLoader(st, batch_size=64))
    if db.kind == "sqlite":  # without features the mixed column is just text
        assert tfd.SQLDataset(db.url, table=name, key="id")[50]["x"] == "abc"


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@localhost/db", "oracle://scott:tiger@h/x", "mssql+pyodbc://h/db"]
)
def test_unsupported_scheme(url):
    scheme = url.split("://")[0]
    for make in (tfd.SQLDataset, tfd.SQLStream):
        with pytest.raises(tfd.ConfigError, match=scheme.replace("+", r"\+")) as info:
            make(url, table="t", key="id")
        assert "pw" not in str(info.value) and "tiger" not in str(info.value)


def test_bad_configuration():
    with pytest.raises(tfd.ConfigError, match="in-memory"):
        tfd.SQLDataset("sqlite://", table="t", key="id")
    with pytest.raises(tfd.ConfigError, match="exactly one"):
        tfd.SQLDataset("sqlite:///x.db", key="id")
    with pytest.raises(tfd.ConfigError, match="exactly one"):
        tfd.SQLDataset("sqlite:///x.db", table="t", query="SELECT 1", key="id")
    with pytest.raises(tfd.ConfigError, match="cannot parse"):
        tfd.SQLDataset("::not a url::", table="t", key="id")


def test_missing_sqlite_file_is_named(tmp_path):
    with pytest.raises(tfd.NotFoundError, match=r"nothing-here\.db"):
        tfd.SQLDataset(f"sqlite:///{tmp_path}/nothing-here.db", table="t", key="id")


def test_key_is_required_for_map_style(items):
    db, table = items
    with pytest.raises(tfd.ConfigError, match="key="):
        tfd.SQLDataset(db.url, table=table)


def test_params_must_match_the_query(items):
    db, table = items
    q = f'SELECT * FROM "{table}" WHERE id < :hi'
    with pytest.raises(tfd.ConfigError, match=":hi"):
        tfd.SQLDataset(db.url, query=q, key="id", params={})
    with pytest.raises(tfd.ConfigError, match="'lo'"):
        tfd.SQLDataset(db.url, query=q, key="id", params={"hi": 5, "lo": 1})


def test_duplicate_column_names_in_a_join(items):
    db, table = items
    q = f'SELECT a.id, b.id FROM "{table}" a JOIN "{table}" b ON a.id = b.id'
    if db.kind == "sqlite":  # SQLite renames the second one itself ("id:1")
        assert len(tfd.SQLDataset(db.url, query=q, key="id")[0]) == 2
        return
    with pytest.raises(tfd.ConfigError, match="'id'"):
        tfd.SQLDataset(db.url, query=q, key="id")


def test_injection_looking_names_are_not_found_and_nothing_is_dropped(db):
    db.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
    before = db.tables()
    with pytest.raises(tfd.NotFoundError, match=r"orders; DROP TABLE users; --"):
        tfd.SQLDataset(db.url, table=INJECTION, key="id")
    with pytest.raises(tfd.NotFoundError, match=r"orders; DROP TABLE users; --"):
        next(iter(tfd.SQLStream(db.url, table=INJECTION, key="id")))
    with pytest.raises(tfd.NotFoundError):  # as a column name too
        tfd.SQLDataset(db.url, table="orders", key='id" FROM orders; DROP TABLE users; --')
    with pytest.raises(tfd.NotFoundError):
        tfd.SQLDataset(db.url, table="orders", key="id", columns=["id); DROP TABLE users; --"])
    assert db.tables() == before and {"users", "orders"} <= before


def test_text_key_values_are_bound_not_spliced(db):
    name = f"evil_{db.kind}"
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    db.execute(f'CREATE TABLE "{name}" (k TEXT PRIMARY KEY, n INTEGER)')
    evil = ["a'); DROP TABLE users; --", 'b"}', "c\\", "d,e", "{f}", "NULL"]
    db.executemany(
        f'INSERT INTO "{name}" VALUES ({db.ph}, {db.ph})', [(k, i) for i, k in enumerate(evil)]
    )
    db.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY)")
    ds = tfd.SQLDataset(db.url, table=name, key="k")
    assert sorted(r["k"] for r in ds.__getitems__(range(len(ds)))) == sorted(evil)
    assert "users" in db.tables()


def test_password_never_shown(pg_db):
    # pgserver trusts local connections, so a password in the URL is accepted and ignored
    secret = "Sup3rS3cretPW"
    url = pg_db.url.replace("postgres:@", f"postgres:{secret}@", 1)
    assert secret in url
    table = pg_db.make_items(10)
    ds = tfd.SQLDataset(url, table=table, key="id")
    st = tfd.SQLStream(url, table=table, key="id")
    texts = [repr(ds), str(ds), ds.describe(), repr(st), st.describe(), str(pickle.dumps(ds))[:0]]
    for exc_make in (
        lambda: tfd.SQLDataset(url, table="no_such_table", key="id"),
        lambda: tfd.SQLDataset(url, table=table, key="nope"),
        lambda: next(iter(tfd.SQLStream(url, table="no_such_table", key="id"))),
        lambda: tfd.SQLDataset(url.replace("postgres?", "no_such_db?"), table=table, key="id"),
        lambda: tfd.SQLDataset(f"postgresql://bob:{secret}@127.0.0.1:1/db", table="t", key="id"),
    ):
        with pytest.raises(tfd.TensorfeedError) as info:
            exc_make()
        texts.append(str(info.value))
        texts.append(repr(info.value))
        assert info.value.__cause__ is None or secret not in str(info.value.__cause__)
    assert any("***" in t for t in texts)
    for t in texts:
        assert secret not in t


def test_connection_failure_is_named(pg_db):
    with pytest.raises(tfd.ConnectionFailedError, match=r"127\.0\.0\.1"):
        tfd.SQLDataset("postgresql://u:pw@127.0.0.1:1/db", table="t", key="id")


def test_missing_postgres_driver_names_the_extra(pg_db):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["adbc_driver_postgresql"] = None  # as if tensorfeed[postgres] were absent
        sys.modules["adbc_driver_postgresql.dbapi"] = None
        import tensorfeed as tfd
        try:
            tfd.SQLStream({pg_db.url!r}, table="t", key="id")
        except tfd.MissingDependencyError as exc:
            print("OK", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "OK" in out.stdout and "tensorfeed[postgres]" in out.stdout, out.stderr


def test_bad_sql_is_a_config_error(items):
    db, table = items
    with pytest.raises(tfd.ConfigError, match="refused"):
        tfd.SQLDataset(db.url, query=f'SELEC id FROM "{table}"', key="id")
