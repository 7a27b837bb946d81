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

from .errors import DatasetError

__all__ = ["read_labels_csv", "parse_number"]


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
    is numeric (floats, empty -> NaN); otherwise text (empty -> '').
    Comma, tab and semicolon separators are recognised.
    """
    cols, body = _csv_rows(text, name)
    label_cols = [c for c in cols if c not in ("path", "subject")]
    numeric = {c: _is_numeric(r[c] for _, r in body) for c in label_cols}
    out = []
    for line, r in body:
        path = _clean_path(r["path"])
        if not path:
            raise DatasetError(f"{name}:{line}: empty path")
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
    if "path" not in cols:
        raise DatasetError(f"{name}: labels CSV has no 'path' column (columns: "
                           f"{', '.join(cols)})")
    body = []
    for i, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(cols):
            raise DatasetError(f"{name}:{i}: row has {len(row)} fields, the header has "
                               f"{len(cols)}")
        body.append((i, dict(zip(cols, (c.strip() for c in row)))))
    return cols, body


def _is_numeric(cells) -> bool:
    """True when every non-empty cell parses as a number."""
    for v in cells:
        if v:
            try:
                float(v)
            except ValueError:
                return False
    return True


def _clean_path(path: str) -> str:
    """A CSV path as a posix path relative to the folder, without ./ or a trailing /."""
    path = path.replace("\\", "/").strip()
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/")
