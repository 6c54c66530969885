"""The ``tensorfeed`` command line: demo, inspect, bench, tune.

Every error (the library's, a driver's, the filesystem's, a bad flag) is printed as one line on
stderr, ``tensorfeed: error: <Kind>: <what is wrong>``, never a traceback and never a password, and
exits 2. ``TENSORFEED_DEBUG=1`` in the environment re-raises it with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError

DEMOS = {
    "ecommerce": "tensorfeed.demo.ecommerce",
    "lake": "tensorfeed.demo.lake",
    "kafka": "tensorfeed.demo.kafka",
}
DEFAULT_DEMO = "ecommerce"
DEBUG_ENV = "TENSORFEED_DEBUG"


class UsageError(Exception):
    """A command line argparse rejects; the message is already the whole line to print."""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line naming the flag (and exits 2 via main),
    and that it knows its flags by the keyword argument each one feeds (``batch_size``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flags: dict[str, argparse.Action] = {}

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.dest != "help":
            self.flags[action.dest] = action
        return action

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# --------------------------------------------------------------------------- safe messages


def redact(url: str) -> str:
    """``url`` as it may be shown: a SQL URL as the SQL sources show it
    (:func:`tensorfeed.sources.sql.display_url`), any other with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.scheme.split("+")[0] in ("postgresql", "postgres", "sqlite"):
        from .sources.sql import display_url

        return display_url(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/:@\s]*:)[^@\s/]+@")
_SECRET_OPTIONS = re.compile(
    r"^(?:secret|secret_key|aws_secret_access_key|token|session_token|aws_session_token|"
    r"key|access_key|aws_access_key_id|password|sasl\.password)=(.+)$"
)


def _secrets(argv: Sequence[str]) -> list[str]:
    """Passwords and keys given on the command line: in URLs and in KEY=VALUE options."""
    out = []
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        m = _SECRET_OPTIONS.match(value)
        if m:
            out.append(m.group(1))
            continue
        try:
            password = urlsplit(value).password
        except ValueError:
            continue
        if password:
            out += [password, unquote(password)]
    return sorted({s for s in out if len(s) > 1}, key=len, reverse=True)


def _scrub(message: str, argv: Sequence[str]) -> str:
    """``message`` without any password or key of the command line, nor any URL's password."""
    for secret in _secrets(argv):
        message = message.replace(secret, "***")
    return _USERINFO.sub(r"\1***@", message)


def _one_line(exc: BaseException) -> str:
    """The line that says what is wrong. An error re-raised from a DataLoader worker carries the
    worker's traceback: its last line is the original error."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1].strip()
        text = re.sub(r"^[\w.]+(?:Error|Exception|Interrupt|Exit)\w*: ", "", last)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _as_flags(message: str, flags: Mapping[str, argparse.Action]) -> str:
    """A library message that names keyword arguments (``key=``, ``batch_size must``) rewritten
    to name the command's flags (``--key``, ``--batch-size must``)."""
    for dest, action in flags.items():
        flag = action.option_strings[-1]
        is_switch = action.nargs == 0 and action.const is True

        def repl(m: re.Match[str], flag: str = flag, is_switch: bool = is_switch) -> str:
            value = m.group("value") or ""
            if is_switch and value == "True":
                return flag
            return f"{flag} {value}" if value else flag

        pattern = rf"(?<![\w.'\"-]){re.escape(dest)}(?:=(?P<value>[\w.-]*)|(?= must | needs ))"
        message = re.sub(pattern, repl, message)
    return message


def _report(exc: BaseException, argv: Sequence[str], flags: Mapping[str, argparse.Action]) -> int:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise exc
    line = _one_line(exc)
    if isinstance(exc, ConfigError):
        line = _as_flags(line, flags)
    if not isinstance(exc, UsageError):  # argparse's line already says where it comes from
        line = f"tensorfeed: error: {type(exc).__name__}: {line}"
    print(_scrub(line, argv), file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- commands


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

    if args.batches < 1:
        raise ConfigError(f"--batches must be >= 1, got {args.batches}")
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

    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise ConfigError(f"--plot {args.plot!r}: its folder does not exist")
    ds = open_url(args.url, **_source_options(args))
    rec = tune(ds, args.batch_size, plot=args.plot)
    print(f"recommended num_workers={int(rec)}")
    return 0


def _demo_description(name: str) -> str:
    module = importlib.import_module(DEMOS[name])
    return (module.__doc__ or "").strip().splitlines()[0]


def demo_help() -> str:
    """``tensorfeed demo --help``: the demos, each with its one-line description."""
    width = max(map(len, DEMOS))
    lines = [
        "usage: tensorfeed demo [NAME] [FLAGS ...]",
        "",
        "Train a small PyTorch model end to end from an embedded source.",
        "",
        "demos:",
    ]
    for name in DEMOS:
        lines.append(f"  {name.ljust(width)}  {_demo_description(name)}")
    lines += [
        "",
        f"NAME defaults to {DEFAULT_DEMO}. `tensorfeed demo NAME --help` lists a demo's flags.",
    ]
    return "\n".join(lines)


def demo_parser(name: str) -> _Parser:
    """The parser of ``tensorfeed demo NAME``: the demo's own flags."""
    module = importlib.import_module(DEMOS[name])
    parser = _Parser(prog=f"tensorfeed demo {name}", description=_demo_description(name))
    module.add_arguments(parser)
    return parser


def _split_demo(rest: list[str]) -> tuple[str | None, list[str]]:
    """(demo name or None for ``demo --help``, the demo's own arguments)."""
    if rest and not rest[0].startswith("-"):
        name = rest[0]
        if name not in DEMOS:
            raise UsageError(
                f"tensorfeed demo: error: unknown demo {name!r}; choose from {', '.join(DEMOS)} "
                "(see tensorfeed demo --help)"
            )
        return name, rest[1:]
    if rest and rest[0] in ("-h", "--help"):
        return None, []
    return DEFAULT_DEMO, rest


# --------------------------------------------------------------------------- main


def build_parser() -> _Parser:
    parser = _Parser(prog="tensorfeed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo",
        help="train from an embedded source: (ecommerce) | lake | kafka; see demo --help",
        add_help=False,
    )
    p = sub.add_parser("inspect", help="schema, row count and first rows of a source")
    _add_source_args(p)
    p.add_argument("--rows", type=int, default=5, help="rows to show (default 5)")
    p.set_defaults(handler=_cmd_inspect, flags=p.flags)
    p = sub.add_parser("bench", help="rows/s through tfd.DataLoader")
    _add_source_args(p)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--shuffle", action="store_true")
    p.set_defaults(handler=_cmd_bench, flags=p.flags)
    p = sub.add_parser("tune", help="throughput per num_workers and the recommendation")
    _add_source_args(p)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--plot", help="save a PNG plot here")
    p.set_defaults(handler=_cmd_tune, flags=p.flags)
    return parser


def _run(argv: list[str], flags: dict[str, argparse.Action]) -> int:
    if argv and argv[0] == "demo":
        name, rest = _split_demo(argv[1:])
        if name is None:
            print(demo_help())
            return 0
        parser = demo_parser(name)
        flags.update(parser.flags)
        args = parser.parse_args(rest)
        from .demo import torch_cache_in_cache_dir

        torch_cache_in_cache_dir(getattr(args, "cache_dir", None))
        return int(importlib.import_module(DEMOS[name]).run(args))
    args = build_parser().parse_args(argv)
    flags.update(args.flags)
    return int(args.handler(args))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags: dict[str, argparse.Action] = {}
    try:
        return _run(argv, flags)
    except KeyboardInterrupt:
        print("tensorfeed: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, whatever raised it
        return _report(exc, argv, flags)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
