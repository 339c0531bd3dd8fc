"""Load a member's own table (CSV or Parquet) as an :class:`~fedswarm.data.datasets.ArrayDataset`.

CSV is read with the standard library (first row = header, comma-separated, RFC 4180 quoting, UTF-8
with or without a byte-order mark; blank lines are skipped). Parquet needs pyarrow, the optional
``fedswarm[parquet]`` extra.

Features must be finite numbers (booleans count as 0/1 in Parquet). Labels are turned into class
indices: non-negative integers are used as they are (class names ``"0"`` .. ``"max"``), so members whose
files lack a class still agree on the indices; any other labels (names, negative integers) are sorted
and numbered, or numbered in the order of ``classes=`` when given, which is how members with different
subsets of string labels agree on one mapping. Non-integer numeric labels are rejected.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import DataError
from fedswarm.data.datasets import ArrayDataset

__all__ = ["load_table"]

_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")


def load_table(
    path: str | os.PathLike[str],
    *,
    label: str,
    features: Sequence[str] | None = None,
    group: str | None = None,
    classes: Sequence[str] | None = None,
) -> ArrayDataset:
    """Read a CSV or Parquet file into an :class:`ArrayDataset`.

    Parameters
    ----------
    path:
        A ``.csv``, ``.parquet`` or ``.pq`` file.
    label:
        Name of the label column.
    features:
        Feature columns, in this order; default: every column except ``label`` and ``group``.
    group:
        Optional column whose distinct values become the dataset's ``groups`` (for the natural partition).
    classes:
        Optional fixed class names; label values (as text) must be among them.

    Raises
    ------
    DataError
        Missing file or column, unsupported suffix, empty file, truncated row, a non-numeric or missing
        feature value, or Parquet without pyarrow; the message names the file and, where it applies, the
        column and line.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in _CSV + _PARQUET:
        raise DataError(f"{file}: unsupported file type '{suffix}'; use .csv, .parquet or .pq")
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    columns, where = _read_csv(file) if suffix in _CSV else _read_parquet(file)
    names = list(columns)
    if label not in columns:
        raise DataError(f"{file}: label column '{label}' not found; available columns: {', '.join(names)}")
    if group is not None and group not in columns:
        raise DataError(f"{file}: group column '{group}' not found; available columns: {', '.join(names)}")
    chosen = [c for c in names if c not in (label, group)] if features is None else list(features)
    missing = [c for c in chosen if c not in columns]
    if missing:
        raise DataError(f"{file}: feature column(s) {', '.join(missing)} not found; available: {', '.join(names)}")
    if label in chosen:
        raise DataError(f"{file}: column '{label}' is both the label and a feature")
    if not chosen:
        raise DataError(f"{file}: no feature columns besides the label '{label}'")
    n = len(columns[label])
    x = np.empty((n, len(chosen)), dtype=np.float32)
    for j, name in enumerate(chosen):
        x[:, j] = _numeric(columns[name], file, name, where)
    y, class_names = _encode_labels(columns[label], file, label, where, classes)
    groups = None
    if group is not None:
        _, inverse = np.unique(np.asarray(columns[group]).astype(str), return_inverse=True)
        groups = inverse.reshape(-1).astype(np.int64)
    return ArrayDataset(
        name=file.stem,
        x=x,
        y=y,
        feature_names=tuple(chosen),
        class_names=class_names,
        groups=groups,
        description=f"table {file.name}: {n} rows, label '{label}'",
    )


# A column is an array of values; ``where(i)`` describes row i for messages ("line 7", "row 6").
_Columns = dict[str, npt.NDArray[Any]]


class _Where:
    def __init__(self, lines: Sequence[int] | None) -> None:
        self._lines = lines

    def __call__(self, row: int) -> str:
        return f"line {self._lines[row]}" if self._lines is not None else f"row {row}"


def _read_csv(file: Path) -> tuple[_Columns, _Where]:
    rows: list[list[str]] = []
    lines: list[int] = []
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError(f"{file}: line 1: the file is empty; expected a header row")
            header = [h.strip() for h in header]
            duplicated = sorted({h for h in header if header.count(h) > 1})
            if duplicated:
                raise DataError(f"{file}: line 1: duplicate column name(s) {', '.join(duplicated)}")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{file}: line {reader.line_num}: expected {len(header)} fields, found {len(row)} "
                        "(truncated or malformed row)"
                    )
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as exc:
            raise DataError(f"{file}: line {reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not UTF-8 text ({exc.reason})") from exc
    if not rows:
        raise DataError(f"{file}: line 2: no data rows after the header")
    table = np.array(rows, dtype=str)
    return {name: table[:, j] for j, name in enumerate(header)}, _Where(lines)


def _read_parquet(file: Path) -> tuple[_Columns, _Where]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"{file}: reading Parquet needs pyarrow; install it with `pip install fedswarm[parquet]`"
        ) from exc
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file}: not a readable Parquet file ({exc})") from exc
    if table.num_rows == 0:
        raise DataError(f"{file}: the table has no rows")
    columns: _Columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{file}: column '{name}' has {column.null_count} missing value(s), first at row {first}")
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            columns[name] = column.to_numpy()
        else:  # strings, dictionaries, dates ...: Python objects, rejected as features unless numeric text
            columns[name] = np.array(column.to_pylist(), dtype=object)
    return columns, _Where(None)


def _numeric(values: npt.NDArray[Any], file: Path, column: str, where: _Where) -> npt.NDArray[np.float32]:
    """Convert one feature column, naming the column and the first bad value."""
    try:
        converted = values.astype(np.float64)
    except (ValueError, TypeError):
        for i, value in enumerate(values):
            try:
                float(value)
            except (ValueError, TypeError):
                shown = "an empty value" if not str(value).strip() else f"'{value}'"
                raise DataError(f"{file}: feature column '{column}' is not numeric: {where(i)} has {shown}") from None
        raise  # pragma: no cover - astype failed, yet every value converts
    out = converted.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise DataError(
            f"{file}: feature column '{column}' has a non-finite value at {where(int(bad[0]))} ('{values[bad[0]]}')"
        )
    return out


def _encode_labels(
    values: npt.NDArray[Any], file: Path, column: str, where: _Where, classes: Sequence[str] | None
) -> tuple[npt.NDArray[np.int64], tuple[str, ...]]:
    texts: npt.NDArray[Any]
    numbers: npt.NDArray[np.float64] | None
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    if values.dtype.kind in "iuf":
        numbers = values.astype(np.float64)
    else:
        texts = np.char.strip(values.astype(str))
        empty = np.flatnonzero(texts == "")
        if empty.size:
            raise DataError(f"{file}: label column '{column}' is empty at {where(int(empty[0]))}")
        try:
            numbers = texts.astype(np.float64)
        except ValueError:
            numbers = None
    if numbers is not None:
        fractional = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
        if fractional.size:
            i = int(fractional[0])
            raise DataError(
                f"{file}: label column '{column}' holds a non-integer number at {where(i)} ({values[i]}); "
                "labels must be integers or class names"
            )
        integers = numbers.astype(np.int64)
        if classes is None and integers.min() >= 0:
            return integers, tuple(str(k) for k in range(int(integers.max()) + 1))
        texts = integers.astype(str)
    if classes is not None:
        lookup = {name: k for k, name in enumerate(classes)}
        unknown = np.flatnonzero([t not in lookup for t in texts])
        if unknown.size:
            i = int(unknown[0])
            raise DataError(f"{file}: label '{texts[i]}' at {where(i)} is not among classes {', '.join(classes)}")
        return np.array([lookup[t] for t in texts], dtype=np.int64), tuple(classes)
    if numbers is not None:
        uniq_numbers, inverse = np.unique(numbers.astype(np.int64), return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), tuple(str(v) for v in uniq_numbers)
    uniq, inverse = np.unique(texts, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), tuple(str(v) for v in uniq)
