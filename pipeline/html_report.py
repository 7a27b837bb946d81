"""One self-contained HTML page describing a store (``ahdi inspect --html``).

The page is built from small named pieces: the head with its inline CSS,
the summary table, failures and warnings, parameters, labels, the montage
and one figure per item. Pictures are embedded as base64 PNG data URIs, so
the file can be opened or mailed alone.

>>> from ahdi.pipeline.store import open_store                  # doctest: +SKIP
>>> html_report(open_store("out.zarr"), "report.html")          # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .figures import REP_TITLES, encode_png, montage, readable
from .store import IMAGE_REPRESENTATIONS, Store
from .summary import label_detail, summary
from .video_figure import video_plot

__all__ = ["html_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1000px;color:#222;background:#fafafa;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:20px 0 6px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 12px 3px 0;text-align:left;
vertical-align:top}th{font-weight:600;color:#555}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{white-space:pre-wrap;margin:0}
.done{color:#2c7a2c}.failed{color:#c62828}.pending{color:#777}
.err{background:#fff0f0;border-left:3px solid #c62828;padding:4px 8px}
.warn{background:#fff8e6;border-left:3px solid #e0a000;padding:4px 8px}
img{max-width:100%;height:auto;display:block;image-rendering:auto}
.item{margin:18px 0;padding:8px;background:#fff;border:1px solid #e4e4e4}
.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """An HTML table; cells are inserted as given (escape them first)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _page(title: str, body: Sequence[str]) -> str:
    """The whole document: head, inline CSS and the body's pieces."""
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _header(title: str, info: dict[str, Any]) -> list[str]:
    """Title, path and the table of what the store is and how far it got."""
    c = info["counts"]
    return [f"<h1>{_e(title)}</h1>",
            f"<p class='muted'><code>{_e(info['path'])}</code></p>",
            _table([
                ("dataset", _e(f"{info['dataset']} (source: {info['source']})")),
                ("created", _e(info["created"])),
                ("parameter hash", f"<code>{_e(info['param_hash'])}</code>"),
                ("representations", _e(", ".join(info["representations"]))),
                ("image size", _e(f"{info['size']} x {info['size']}")),
                ("items", f"{info['n_items']}: <span class='done'>{c['done']} done</span>, "
                          f"<span class='failed'>{c['failed']} failed</span>, "
                          f"<span class='pending'>{c['pending']} pending</span>"),
            ])]


def _messages(heading: str, entries: list[dict[str, Any]], key: str, css: str) -> list[str]:
    """A section of ``[index] id`` boxes with each message preformatted."""
    if not entries:
        return []
    out = [f"<h2>{heading} ({len(entries)})</h2>"]
    for e in entries:
        out.append(f"<div class='{css}'><b>[{e['index']}] {_e(e['video_id'])}</b>"
                   f"<pre>{_e(e[key])}</pre></div>")
    return out


def _parameters(info: dict[str, Any]) -> list[str]:
    out = ["<h2>Parameters</h2>",
           _table([(f"<code>{_e(k)}</code>", _e(v)) for k, v in info["params"].items()])]
    if info["versions"]:
        out.append("<p class='muted'>" + _e(", ".join(
            f"{k} {v}" for k, v in info["versions"].items() if v)) + "</p>")
    return out


def _labels(info: dict[str, Any]) -> list[str]:
    if not info["labels"]:
        return ["<h2>Labels</h2>", "<p class='muted'>none</p>"]
    rows = [(f"<code>{_e(name)}</code>", _e(st["kind"]), _e(label_detail(st, sep=", ")),
             _e(f"{st['n_missing']} missing")) for name, st in info["labels"].items()]
    return ["<h2>Labels</h2>", _table(rows, ("name", "kind", "values", "missing"))]


def _montage_section(store: Store, limit: int) -> list[str]:
    """The AHDI montage, or of the first representation the store holds."""
    if not store.counts()["done"]:
        return []
    rep = next((r for r in ("ahdi",) + IMAGE_REPRESENTATIONS + ("mdv",)
                if r in store.representations), store.representations[0])
    return [f"<h2>Montage ({_e(REP_TITLES.get(rep, rep))})</h2>",
            f"<img alt='montage of {_e(rep)}' "
            f"src='{_data_uri(montage(store, rep, max_items=max(1, limit)))}'>"]


def _items_section(store: Store, limit: int) -> list[str]:
    """Every item's status and figure, up to ``limit`` items; a damaged item
    says so in place of its figure (and is named in a warning)."""
    ids = [str(v) for v in store.video_ids()]
    status = store.statuses(unreadable="damaged")
    shown = range(min(store.n_items, limit))
    plots = dict(readable(store, shown, lambda i: video_plot(store, i)))
    out = ["<h2>Items</h2>"]
    if len(shown) < store.n_items:
        out.append(f"<p class='muted'>first {len(shown)} of {store.n_items} items shown "
                   f"(max_items={limit})</p>")
    for i in shown:
        st = str(status[i]) if i in plots else "damaged"
        body = (f"<img alt='{_e(ids[i])}' src='{_data_uri(plots[i])}'>" if i in plots else
                f"<p class='err'>a chunk of this item cannot be read back; run "
                f"<code>ahdi verify {_e(store.path)} --repair</code>, then the same "
                f"<code>ahdi convert</code> command</p>")
        out += [f"<div class='item' id='item-{i}'><h3>[{i}] {_e(ids[i])} "
                f"<span class='{_e(st)}'>{_e(st)}</span></h3>", body, "</div>"]
    return out


def _write_text(path: str, text: str) -> None:
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise OSError(f"cannot write HTML report {path}: {exc.strerror or exc}") from exc


def html_report(store: Store, path: str | os.PathLike, max_items: int = 200) -> str:
    """Write one self-contained HTML page describing a store.

    The page holds the summary (counts, parameters, labels, failures with
    their messages, warnings), the AHDI montage (or the first image
    representation the store holds) and every item's
    :func:`~ahdi.pipeline.video_figure.video_plot`, up to ``max_items``
    items. Images are embedded as base64 PNG data URIs and the CSS is
    inline, so the file can be opened or mailed alone.

    Parameters
    ----------
    store : Store
        An opened store.
    path : str or PathLike
        The HTML file to write (parent folders are created).
    max_items : int
        Most items given a plot (and a montage tile); the page says how many
        were left out.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    path = os.fspath(path)
    info = summary(store)
    limit = max(0, int(max_items))
    title = f"ahdi store {os.path.basename(info['path'].rstrip(os.sep)) or info['path']}"
    body = (_header(title, info)
            + _messages("Failures", info["failures"], "error", "err")
            + _messages("Warnings", info["warnings"], "warning", "warn")
            + _parameters(info)
            + _labels(info)
            + _montage_section(store, limit)
            + _items_section(store, limit))
    _write_text(path, _page(title, body))
    return path
