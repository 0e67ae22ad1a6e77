"""Reading `fitlens explain --html` pages back: text per section, as a browser would show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Section:
    """One ``<section>``: its heading and its items' text, by kind."""

    heading: str = ""
    items: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


class PageReader(HTMLParser):
    """Collects the page's title, h1 and sections (entities decoded, as shown)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.h1 = ""
        self.sections: list[Section] = []
        self.tags: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(Section())
        elif tag == "tr":
            self._row = []
        if tag in ("title", "h1", "h2", "li", "p", "div", "td", "th"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text)
        s = self.sections[-1] if self.sections else None
        if tag == "title":
            self.title = text
        elif tag == "h1":
            self.h1 = text
        elif s is not None and tag == "h2":
            s.heading = text
        elif s is not None and tag == "li":
            s.items.append(text)
        elif s is not None and tag == "div":
            s.lines.append(text)
        elif s is not None and tag == "p":
            s.paragraphs.append(text)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif s is not None and tag == "tr" and self._row is not None:
            s.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def read_page(text: str) -> PageReader:
    """The page parsed into its title, heading and sections."""
    reader = PageReader()
    reader.feed(text)
    reader.close()
    return reader
