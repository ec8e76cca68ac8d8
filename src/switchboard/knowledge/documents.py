"""Knowledge documents: read md, txt, html and pdf files into plain text (with markdown-style headings).

Blocking file I/O: call from a thread (`asyncio.to_thread`) or from the CLI before the event loop runs.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PyPdfError

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


class DocumentError(ValueError):
    """A knowledge file cannot be read; the message says why, without the tenant (the caller adds it)."""


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # the path as written in the tenant file, or inline:<title>
    title: str
    text: str


_BLOCK_TAGS = {
    "p", "div", "section", "article", "li", "ul", "ol", "table", "tr", "br", "hr", "blockquote",
    "pre", "dd", "dt", "main", "header", "footer", "aside", "form", "body",
}
# Menus repeat on every page and match every query; they are not knowledge.
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "svg", "head", "nav"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _HtmlText(HTMLParser):
    """Collects visible text; block elements become paragraph breaks, h1-h6 become `#` headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _HEADINGS:
            self.parts.append("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _HEADINGS or tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip_depth:
            # Whitespace is kept here (it separates inline elements) and collapsed per paragraph later.
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Return (title, text) of an HTML page."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    paragraphs = [" ".join(p.split()) for p in "".join(parser.parts).split("\n\n")]
    return " ".join(parser.title.split()), "\n\n".join(p for p in paragraphs if p)


def pdf_to_text(data: bytes) -> str:
    # pypdf logs warnings for slightly malformed files it can still read; they are not ours to show.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"cannot read PDF: {exc}") from None
    return "\n\n".join(page.strip() for page in pages if page.strip())


def _default_title(path: Path, text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("_", " ").replace("-", " ").strip().capitalize()


def read_document(folder: Path, relative_path: str) -> Document:
    """Read a knowledge file named relative to the tenant file's folder.

    Raises:
        DocumentError: missing, too large, not UTF-8 or an unreadable PDF.
    """
    path = (folder / relative_path).resolve()
    if not path.is_file():
        raise DocumentError(f"file '{relative_path}' not found (looked in {folder})")
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"file '{relative_path}' is {size} bytes, more than {MAX_DOCUMENT_BYTES}")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = pdf_to_text(data)
        return Document(source=relative_path, title=_default_title(path, ""), text=text)
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError(f"file '{relative_path}' is not UTF-8 text") from None
    if suffix in (".html", ".htm"):
        title, text = html_to_text(decoded)
        return Document(source=relative_path, title=title or _default_title(path, text), text=text)
    return Document(source=relative_path, title=_default_title(path, decoded), text=decoded.strip())
