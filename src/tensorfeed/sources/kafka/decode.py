"""Kafka message values -> Arrow columns, a whole poll batch at a time.

JSON values are joined with newlines and parsed by ``pyarrow.json`` into columns in one call (no
per-row dicts). The schema is pinned per reader: given by the user (``schema=``/``columns=``) or
inferred from the first poll batch, then passed as the explicit schema of every later batch, so the
column types never change mid-stream. A batch that does not parse (a value that is not a JSON
object, a wrong type, a newline inside a value) goes to the slow path, which decodes message by
message to find the culprits; a missing or null field is found vectorised from the null counts.
A bad message is returned as ``(index, reason)``; the caller applies the ``on_error`` policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Bad = list[tuple[int, str]]

_TYPE_NAMES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "float": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "string": pa.string(),
}


def as_schema(schema: Any) -> pa.Schema | None:
    """``schema=``: a pyarrow schema, or a dict of column -> pyarrow type / type name."""
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    fields = []
    for name, t in dict(schema).items():
        if isinstance(t, str):
            if t not in _TYPE_NAMES:
                raise ValueError(f"unknown type name {t!r} for column {name!r}")
            t = _TYPE_NAMES[t]
        elif t is float:
            t = pa.float64()
        elif t is int:
            t = pa.int64()
        elif t is bool:
            t = pa.bool_()
        elif t is str:
            t = pa.string()
        fields.append(pa.field(str(name), t))
    return pa.schema(fields)


@dataclass
class Decoder:
    """Decodes value lists into a table of value columns plus a list of bad messages."""

    kind: str | Callable[[bytes], dict[str, Any]]
    schema: pa.Schema | None = None
    columns: Sequence[str] | None = None

    def decode(self, values: list[bytes | None]) -> tuple[pa.Table, Bad]:
        if self.kind == "bytes":
            return self._bytes(values)
        if self.kind == "json":
            return self._json(values)
        return self._callable(values)

    # -- bytes ----------------------------------------------------------------------------------
    def _bytes(self, values: list[bytes | None]) -> tuple[pa.Table, Bad]:
        bad = [(i, "the value is empty (a tombstone)") for i, v in enumerate(values) if v is None]
        if bad:
            keep = [v for v in values if v is not None]
            return pa.table({"value": pa.array(keep, pa.binary())}), bad
        return pa.table({"value": pa.array(values, pa.binary())}), []

    # -- json -----------------------------------------------------------------------------------
    def _json(self, values: list[bytes | None]) -> tuple[pa.Table, Bad]:
        import pyarrow.json as pj

        try:
            buf = b"\n".join(values)  # type: ignore[arg-type]
        except TypeError:  # a None (tombstone) among the values
            return self._json_slow(values)
        if buf.count(b"\n") != len(values) - 1:
            return self._json_slow(values)  # a pretty-printed value: newlines inside
        ro = pj.ReadOptions(use_threads=False, block_size=max(1 << 16, len(buf) + 64))
        if self.schema is None:
            po = pj.ParseOptions()
        else:
            po = pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore")
        try:
            table = pj.read_json(pa.BufferReader(buf), read_options=ro, parse_options=po)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return self._json_slow(values)
        if table.num_rows != len(values):  # empty values are skipped by the reader
            return self._json_slow(values)
        if self.schema is None:
            if table.num_columns == 0:
                return self._json_slow(values)
            self.schema = self._pin(table.schema)
            return self._json(values)  # again, with the pinned schema (first batch only)
        return self._drop_nulls(table)

    def _pin(self, inferred: pa.Schema) -> pa.Schema:
        """The schema of every later batch: ``columns`` (if given) select and order the fields;
        an all-null field's type is unknown yet, so it is read as a string."""
        names = list(self.columns) if self.columns is not None else inferred.names
        fields = []
        for n in names:
            t = inferred.field(n).type if n in inferred.names else pa.string()
            fields.append(pa.field(n, pa.string() if pa.types.is_null(t) else t))
        return pa.schema(fields)

    def _drop_nulls(self, table: pa.Table) -> tuple[pa.Table, Bad]:
        """A missing or null field makes a message malformed (a NULL cannot become a tensor)."""
        if not any(table.column(i).null_count for i in range(table.num_columns)):
            return table, []
        bad_mask = np.zeros(table.num_rows, dtype=bool)
        first_missing: dict[int, str] = {}
        for name in table.column_names:
            col = table.column(name)
            if not col.null_count:
                continue
            nulls = pc.is_null(col).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(nulls & ~bad_mask).tolist():
                first_missing[i] = name
            bad_mask |= nulls
        bad = [(i, f"field {first_missing[i]!r} is missing or null") for i in sorted(first_missing)]
        return table.filter(pa.array(~bad_mask)), bad

    def _json_slow(self, values: list[bytes | None]) -> tuple[pa.Table, Bad]:
        return self._each(values, _json_value, "the value is a JSON {}, not an object")

    # -- callables ------------------------------------------------------------------------------
    def _callable(self, values: list[bytes | None]) -> tuple[pa.Table, Bad]:
        fn: Callable[[bytes], dict[str, Any]] = self.kind  # type: ignore[assignment]

        def call(value: bytes | None) -> Any:
            try:
                return fn(value)  # type: ignore[arg-type]
            except Exception as exc:
                raise _Malformed(
                    f"decode function raised {exc.__class__.__name__}: {exc}"
                ) from None

        return self._each(values, call, "decode function returned {}, not a dict")

    # -- shared slow path -----------------------------------------------------------------------
    def _each(
        self, values: list[bytes | None], parse: Callable[[bytes | None], Any], not_a_dict: str
    ) -> tuple[pa.Table, Bad]:
        """Decode value by value: ``parse`` raises _Malformed for a value it cannot decode, and a
        result that is not a dict is malformed too (``not_a_dict`` says so, ``{}`` its type)."""
        rows: list[dict[str, Any]] = []
        good: list[int] = []
        bad: Bad = []
        for i, v in enumerate(values):
            try:
                obj = parse(v)
            except _Malformed as exc:
                bad.append((i, str(exc)))
                continue
            if not isinstance(obj, dict):
                bad.append((i, not_a_dict.format(type(obj).__name__)))
                continue
            rows.append(obj)
            good.append(i)
        return self._from_rows(rows, good, bad)

    def _from_rows(
        self, rows: list[dict[str, Any]], good: list[int], bad: Bad
    ) -> tuple[pa.Table, Bad]:
        if self.schema is None and rows:
            self.schema = self._infer(rows)
        if self.schema is None:
            return pa.table({}), sorted(bad)
        checks = [(f.name, _checker(f.type)) for f in self.schema]
        keep: list[dict[str, Any]] = []
        for i, row in zip(good, rows):
            why = _check_row(row, checks)
            if why is None:
                keep.append(row)
            else:
                bad.append((i, why))
        table = pa.Table.from_pylist(keep, schema=self.schema)
        return table, sorted(bad)

    def _infer(self, rows: list[dict[str, Any]]) -> pa.Schema:
        template = rows[0]
        names = list(self.columns) if self.columns is not None else list(template)
        same = [r for r in rows if all(r.get(n) is not None for n in names)]
        try:
            inferred = pa.Table.from_pylist([{n: r[n] for n in names} for r in same]).schema
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            inferred = pa.Table.from_pylist([{n: template.get(n) for n in names}]).schema
        return self._pin(inferred)


def _checker(t: pa.DataType) -> Callable[[Any], bool]:
    if pa.types.is_boolean(t):
        return lambda v: isinstance(v, bool)
    if pa.types.is_integer(t):
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if pa.types.is_floating(t):
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return lambda v: isinstance(v, str)

    def generic(v: Any) -> bool:
        try:
            pa.scalar(v, type=t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            return False
        return True

    return generic


def _check_row(row: dict[str, Any], checks: list[tuple[str, Callable[[Any], bool]]]) -> str | None:
    for name, ok in checks:
        if name not in row or row[name] is None:
            return f"field {name!r} is missing or null"
        if not ok(row[name]):
            return (
                f"field {name!r} has the wrong type ({type(row[name]).__name__} {row[name]!r:.40})"
            )
    return None


class _Malformed(Exception):
    """A message value that cannot become a row; the text says why."""


def _json_value(value: bytes | None) -> Any:
    if value is None:
        raise _Malformed("the value is empty (a tombstone)")
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Malformed(f"the value is not JSON ({exc.__class__.__name__}: {exc})") from None
