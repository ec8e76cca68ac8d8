"""Split a document's text into retrieval chunks of a few sentences, each carrying its heading path.

Pure. Chunks stay under the embedding model's useful length (all-MiniLM-L6-v2 was trained on 128
word pieces); the heading is kept apart so it can be embedded and matched with the chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHUNKER_VERSION = "1"
MAX_CHUNK_WORDS = 90
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True, slots=True)
class Chunk:
    heading: str  # "Returns > Refunds", or "" before the first heading
    text: str

    def for_embedding(self, title: str) -> str:
        """The text embedded and matched lexically: title and heading path give the chunk its topic."""
        parts = [title] if title and not self.heading.startswith(title) else []
        if self.heading:
            parts.append(self.heading)
        context = " > ".join(parts)
        return f"{context}: {self.text}" if context else self.text


def _split_long(paragraph: str) -> list[str]:
    words = paragraph.split()
    if len(words) <= MAX_CHUNK_WORDS:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        sentence_words = sentence.split()
        if current and len(current) + len(sentence_words) > MAX_CHUNK_WORDS:
            pieces.append(" ".join(current))
            current = []
        while len(sentence_words) > MAX_CHUNK_WORDS:
            pieces.append(" ".join(sentence_words[:MAX_CHUNK_WORDS]))
            sentence_words = sentence_words[MAX_CHUNK_WORDS:]
        current.extend(sentence_words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(text: str) -> list[Chunk]:
    """Paragraphs under the same heading are packed together up to MAX_CHUNK_WORDS words.

    A heading always starts a new chunk, so a chunk never mixes two sections.
    """
    chunks: list[Chunk] = []
    headings: list[tuple[int, str]] = []
    pending: list[str] = []
    pending_words = 0

    def flush() -> None:
        nonlocal pending, pending_words
        if pending:
            chunks.append(Chunk(heading=" > ".join(h for _, h in headings), text="\n".join(pending)))
        pending, pending_words = [], 0

    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        body: list[str] = []
        for line in lines:
            match = _HEADING.match(line.strip())
            if match:
                if body:
                    pending.append(" ".join(body))
                    pending_words += len(" ".join(body).split())
                    body = []
                flush()
                level = len(match.group(1))
                headings = [h for h in headings if h[0] < level] + [(level, match.group(2))]
            else:
                body.append(line.strip())
        if not body:
            continue
        paragraph = " ".join(part for part in body if part)
        for piece in _split_long(paragraph):
            words = len(piece.split())
            if pending and pending_words + words > MAX_CHUNK_WORDS:
                flush()
            pending.append(piece)
            pending_words += words
    flush()
    return [c for c in chunks if c.text.strip()]
