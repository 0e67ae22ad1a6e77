"""The self-contained HTML page shared by ``fitlens report`` and ``fitlens explain --html``.

The page needs no network and runs no script: charts are SVG images inlined as ``data:`` URIs
(an SVG shown through ``<img>`` can never run code), data is inlined as a JSON block, styles
are inline, and a Content-Security-Policy forbids scripts and any fetch. Callers escape every
text that comes from their input with `esc`; `page` escapes the title and headings itself.

Imports only the standard library, so ``fitlens explain`` (which must never import torch) can
build its page with it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any, TextIO

#: No script, no fetch, no frame: only inline styles and ``data:`` images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;
color:#1a1a1a;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid
#ccc}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{padding:.2em .6em;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
.status{padding:.5em .8em;border-left:6px solid #0072B2;background:#f2f7fb}
.status.bad{border-color:#D55E00;background:#fdf3ec}
.warn li{margin:.2em 0}.note{color:#555;font-size:.92em}
.bar{display:flex;height:1em;min-width:12em;border:1px solid #999}
.bar span{display:block;height:100%}
.data{background:#E69F00}.compute{background:#0072B2}.eval{background:#009E73}
.other{background:repeating-linear-gradient(45deg,#ccc 0 3px,#fff 3px 6px)}
.key span{display:inline-block;width:1em;height:.8em;border:1px solid #999;margin:0 .3em 0 1em}
img.chart{max-width:100%;height:auto}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{font-weight:600}
dd{margin:0;font-family:ui-monospace,monospace;font-size:.92em;word-break:break-all}
code{font-family:ui-monospace,monospace}
.lines{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.92em}
"""


def esc(text: Any) -> str:
    """Text from the input, escaped for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def json_safe(text: str) -> str:
    """JSON text that cannot close the ``<script>`` element holding it (``&<>`` escaped as
    JSON ``\\u`` escapes, which decode to the same characters). Works on any piece of the text."""
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def json_block(data: Any) -> str:
    """``data`` as JSON that cannot close the ``<script>`` element holding it."""
    return json_safe(json.dumps(data, default=str, allow_nan=False))


class JsonSafeWriter:
    """A text sink that passes everything written through `json_safe` (streamed JSON blocks).

    Args:
        out: Where the escaped text goes.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns its length before escaping."""
        self.out.write(json_safe(text))
        return len(text)


def charts_html(charts: Sequence[tuple[str, bytes]]) -> str:
    """``(caption, SVG bytes)`` pairs as inline images with their captions; empty for none."""
    return "".join(
        f'<figure><img class="chart" alt="{esc(caption)}" '
        f'src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}">'
        f"<figcaption class=note>{esc(caption)}</figcaption></figure>"
        for caption, svg in charts
    )


def page(
    title: str,
    heading: str,
    note: str,
    sections: Sequence[tuple[str, str]],
    data: tuple[str, Any] | None = None,
) -> str:
    """The whole page as text.

    Args:
        title: the window title, plain text (escaped here).
        heading: the ``<h1>`` content, HTML (the caller escapes what it puts in).
        note: the line under the heading, HTML.
        sections: ``(heading, HTML content)`` pairs; headings are plain text (escaped here).
        data: ``(element id, JSON-ready data)`` inlined as a ``application/json`` block.
    """
    body = "".join(section_start(h) + content + SECTION_END for h, content in sections)
    block = ""
    if data is not None:
        block = data_start(data[0]) + json_block(data[1]) + DATA_END
    return page_start(title, heading, note) + body + block + PAGE_END


def page_start(title: str, heading: str, note: str) -> str:
    """The page up to its first section (arguments as in `page`), for pages written in pieces."""
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{heading}</h1><p class=note>{note}</p>"
    )


def section_start(heading: str) -> str:
    """A section's opening and its heading (plain text, escaped here); close with SECTION_END."""
    return f"<section><h2>{esc(heading)}</h2>"


def data_start(element: str) -> str:
    """The opening of an inline ``application/json`` block; JSON through `json_safe` follows,
    then DATA_END."""
    return f'<script type="application/json" id="{esc(element)}">'


SECTION_END = "</section>"
DATA_END = "</script>"
PAGE_END = "</body></html>\n"


__all__ = [
    "CSP",
    "CSS",
    "DATA_END",
    "PAGE_END",
    "SECTION_END",
    "JsonSafeWriter",
    "charts_html",
    "data_start",
    "esc",
    "json_block",
    "json_safe",
    "page",
    "page_start",
    "section_start",
]
