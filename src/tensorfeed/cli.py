"""The ``tensorfeed`` command line: demo, inspect, bench, tune.

Errors from the library are printed as one line (never a traceback, never a password) and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import TensorfeedError

DEMOS = {
    "ecommerce": "tensorfeed.demo.ecommerce",
    "lake": "tensorfeed.demo.lake",
    "kafka": "tensorfeed.demo.kafka",
}


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _scrub(message: str, argv: Sequence[str]) -> str:
    """Belt and braces: remove any password given on the command line from ``message``."""
    for arg in argv:
        try:
            password = urlsplit(arg).password
        except ValueError:
            continue
        if password:
            message = message.replace(password, "***")
    return message


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    opts = {}
    for name in ("table", "query", "key"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    return opts


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="source URL (postgresql://, sqlite:///, s3://, a path, kafka://)")
    p.add_argument("--table", help="table to read (SQL)")
    p.add_argument("--query", help="SELECT to read (SQL)")
    p.add_argument("--key", help="unique key column (SQL)")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_url

    print(inspect_url(args.url, table=args.table, query=args.query, rows=args.rows))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .loader import DataLoader
    from .registry import open as open_url

    ds = open_url(args.url, **_source_options(args))
    loader = DataLoader(
        ds, batch_size=args.batch_size, num_workers=args.num_workers, shuffle=args.shuffle or None
    )
    from tqdm import tqdm

    t0 = time.perf_counter()
    rows = 0
    total = min(args.batches, len(loader)) if hasattr(ds, "__len__") else args.batches
    for i, _batch in enumerate(tqdm(loader, total=total, desc="bench", unit="batch")):
        if i + 1 >= args.batches:
            break
    rows = loader.stats.rows
    dt = time.perf_counter() - t0
    print(
        f"{redact(args.url)}: {rows} rows in {dt:.2f}s = {rows / dt:,.0f} rows/s "
        f"(batch_size={args.batch_size}, num_workers={loader.num_workers})"
    )
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .registry import open as open_url
    from .tuning import tune

    ds = open_url(args.url, **_source_options(args))
    rec = tune(ds, args.batch_size, plot=args.plot)
    print(f"recommended num_workers={int(rec)}")
    return 0


def _cmd_demo(name: str, argv: Sequence[str]) -> int:
    if name not in DEMOS:
        raise SystemExit(f"tensorfeed demo: unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    module = importlib.import_module(DEMOS[name])
    parser = argparse.ArgumentParser(
        prog=f"tensorfeed demo {name}".replace(" ecommerce", ""),
        description=(module.__doc__ or "").strip().splitlines()[0],
    )
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(list(argv))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorfeed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo", help="train from an embedded source: (ecommerce) | lake | kafka", add_help=False
    )
    p = sub.add_parser("inspect", help="schema, row count and first rows of a source")
    _add_source_args(p)
    p.add_argument("--rows", type=int, default=5)
    p = sub.add_parser("bench", help="rows/s through tfd.DataLoader")
    _add_source_args(p)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--shuffle", action="store_true")
    p = sub.add_parser("tune", help="throughput per num_workers and the recommendation")
    _add_source_args(p)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--plot", help="save a PNG plot here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            rest = argv[1:]
            name = "ecommerce"
            if rest and not rest[0].startswith("-"):
                name, rest = rest[0], rest[1:]
            return _cmd_demo(name, rest)
        args = build_parser().parse_args(argv)
        handler = {"inspect": _cmd_inspect, "bench": _cmd_bench, "tune": _cmd_tune}[args.command]
        return handler(args)
    except TensorfeedError as exc:
        print(f"tensorfeed: error: {type(exc).__name__}: {_scrub(str(exc), argv)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tensorfeed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
