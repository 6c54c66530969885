"""PostgreSQL: a parameterised query, the pinned snapshot every worker reads, and refresh().

Run: python examples/sql_postgres.py postgresql://user:password@host:5432/db
(or set TENSORFEED_PG_URL). Creates and drops a table named tfd_example_events.
"""

from __future__ import annotations

import os
import sys

import tensorfeed as tfd


def main(url: str) -> None:
    import adbc_driver_postgresql.dbapi as adbc  # the driver of tensorfeed[postgres]

    from tensorfeed.sources.sql import parse_url

    with adbc.connect(parse_url(url)[0].url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS tfd_example_events")
        cur.execute(
            "CREATE TABLE tfd_example_events AS SELECT g AS event_id, g % 7 AS kind, "
            "random() AS value FROM generate_series(1, 10000) g"
        )
        cur.execute("ALTER TABLE tfd_example_events ADD PRIMARY KEY (event_id)")
        # --8<-- [start:snapshot]
        ds = tfd.SQLDataset(
            url,
            query="SELECT event_id, kind, value FROM tfd_example_events WHERE kind <> :skip",
            params={"skip": 3},  # values are always bound, never spliced into the SQL
            key="event_id",
        )
        n = len(ds)
        cur.execute("DELETE FROM tfd_example_events WHERE event_id <= 100")  # another writer
        loader = tfd.DataLoader(ds, batch_size=1000, shuffle=True, num_workers=2)
        seen = sum(len(batch["event_id"]) for batch in loader)
        assert seen == n  # workers read the snapshot the dataset was built in

        ds.refresh()  # the next epoch sees the database as it is now
        print(n, "->", len(ds))
        ds.close()  # ends the snapshot's transaction (it holds a share lock on what it read)
        # --8<-- [end:snapshot]
        cur.execute("DROP TABLE tfd_example_events")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ["TENSORFEED_PG_URL"])
