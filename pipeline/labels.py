"""Label files: a labels CSV for a folder of videos, and one-number label files.

:func:`read_labels_csv` reads the CSV that gives the videos of a plain
folder their subjects and labels (docs/datasets.md, "labels CSV");
:func:`parse_number` reads the first number of a UNBC or BioVid label file.
Neither reads video pixels.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath

from .errors import DatasetError

__all__ = ["read_labels_csv", "parse_number"]

#: Rows a message lists before it says "and N more".
_SHOWN = 5


def parse_number(text: str | None) -> float:
    """First number of a label file, NaN when missing or unparsable."""
    if text is None:
        return math.nan
    toks = text.split()
    try:
        return float(toks[0]) if toks else math.nan
    except ValueError:
        return math.nan


def read_labels_csv(text: str, name: str) -> list[tuple[int, str, str | None, dict]]:
    """Parse a labels CSV: rows of (line, path, subject or None, labels).

    The ``path`` column is required, ``subject`` optional, every other
    column is a label. A column whose non-empty cells all parse as numbers
    is numeric (floats, empty -> NaN); one where most do but some do not is
    refused, naming those rows (a typo must not turn a score into text);
    otherwise it is text (empty -> ''). Paths are normalised (``s2//v.mp4``
    and ``./s2/./v.mp4`` are ``s2/v.mp4``) and two rows naming one video
    are refused.
    Comma, tab and semicolon separators are recognised.
    """
    cols, body = _csv_rows(text, name)
    label_cols = [c for c in cols if c not in ("path", "subject")]
    numeric = {c: _is_numeric(c, body, name) for c in label_cols}
    out = []
    first_line: dict[str, int] = {}
    for line, r in body:
        path = _clean_path(r["path"])
        if not path:
            raise DatasetError(f"{name}:{line}: empty path")
        if path in first_line:
            raise DatasetError(f"{name}:{line}: path {r['path']!r} names the same video as "
                               f"line {first_line[path]} ({path})")
        first_line[path] = line
        labels: dict[str, float | str] = {}
        for c in label_cols:
            v = r[c]
            labels[c] = (float(v) if v else math.nan) if numeric[c] else v
        subject = r.get("subject") or None
        out.append((line, path, subject, labels))
    return out


def _csv_rows(text: str, name: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header's columns and the non-blank rows as (line, column -> stripped cell)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DatasetError(f"{name}: labels CSV is empty (it needs a header with a 'path' column)")
    header = lines[0]
    delim = max((",", "\t", ";"), key=header.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    cols = [c.strip() for c in rows[0]]
    _check_header(cols, name)
    body = []
    for i, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(cols):
            raise DatasetError(f"{name}:{i}: row has {len(row)} fields, the header has "
                               f"{len(cols)}")
        body.append((i, dict(zip(cols, (c.strip() for c in row)))))
    return cols, body


def _check_header(cols: list[str], name: str) -> None:
    """A header has a 'path' column, and no column name twice (one would hide the other)."""
    if "path" not in cols:
        raise DatasetError(f"{name}: labels CSV has no 'path' column (columns: "
                           f"{', '.join(cols)})")
    for i, c in enumerate(cols):
        if c in cols[:i]:
            raise DatasetError(f"{name}:1: column {c!r} appears twice in the header (columns "
                               f"{cols.index(c) + 1} and {i + 1})")


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_numeric(column: str, body: list[tuple[int, dict[str, str]]], name: str) -> bool:
    """True when every non-empty cell of ``column`` is a number; False when most are not.

    Raises DatasetError when numbers are the majority but some cells are
    not: that is a score with typos or 'NA's, not a text column.
    """
    numbers = [line for line, r in body if r[column] and _number(r[column])]
    others = [(line, r[column]) for line, r in body if r[column] and not _number(r[column])]
    if not others:
        return True
    if len(others) >= len(numbers):
        return False
    shown = ", ".join(f"line {line} ({cell!r})" for line, cell in others[:_SHOWN])
    more = f" and {len(others) - _SHOWN} more" if len(others) > _SHOWN else ""
    raise DatasetError(f"{name}: column {column!r} holds numbers except on {shown}{more}; "
                       "fix those cells, or leave a missing value empty")


def _clean_path(path: str) -> str:
    """A CSV path as a normalised posix path: ``s2//v.mp4``, ``./s2/./v.mp4`` -> ``s2/v.mp4``.

    Backslashes become slashes; an absolute path stays absolute. Two rows
    naming one file the same way after this are one video.
    """
    path = path.replace("\\", "/").strip()
    if not path:
        return ""
    path = posixpath.normpath(path)
    if path.startswith("//"):  # normpath keeps a leading '//' (posix allows it a meaning)
        path = "/" + path.lstrip("/")
    return "" if path == "." else path
