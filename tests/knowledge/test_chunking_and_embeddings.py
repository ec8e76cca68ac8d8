"""Chunking (pure) and the numpy MiniLM forward pass."""

from __future__ import annotations

import numpy as np

from switchboard.knowledge.chunking import MAX_CHUNK_WORDS, chunk_text
from switchboard.knowledge.documents import html_to_text
from switchboard.knowledge.embeddings import EMBEDDING_DIM, from_bytes, load_embedder, to_bytes
from switchboard.knowledge.retrieval import bm25_scores, terms


def test_chunks_follow_headings_and_keep_their_path() -> None:
    chunks = chunk_text("Intro line.\n\n# Returns\n\nWithin 30 days.\n\n## Refunds\n\nFive days.\n\n# Shipping\n\nFree over 50.")
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Intro line."),
        ("Returns", "Within 30 days."),
        ("Returns > Refunds", "Five days."),
        ("Shipping", "Free over 50."),
    ]


def test_long_paragraphs_are_split_at_sentences_under_the_word_limit() -> None:
    sentence = "The store opens at nine and closes at six on weekdays. "
    chunks = chunk_text(sentence * 40)
    assert len(chunks) > 1
    assert all(len(c.text.split()) <= MAX_CHUNK_WORDS for c in chunks)
    assert all(c.text.endswith("weekdays.") for c in chunks)
    assert " ".join(c.text for c in chunks) == (sentence * 40).strip()


def test_html_becomes_paragraphs_with_headings() -> None:
    title, text = html_to_text(
        "<html><head><title>Help</title><script>x()</script></head><body><h2>Hours</h2>"
        "<p>Open <b>daily</b> &amp; late.</p><nav>menu</nav></body></html>"
    )
    assert title == "Help"
    assert text == "## Hours\n\nOpen daily & late."


def test_embeddings_are_unit_vectors_independent_of_batch_padding() -> None:
    embedder = load_embedder()
    texts = ["What are your opening hours?", "When is the store open?", "How do I return a jacket that is too small?"]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    assert together.shape == (3, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Padding the short texts to the longest one must not change their vectors (the attention mask works).
    np.testing.assert_allclose(together, alone, atol=1e-5)
    similarity = together @ together.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]
    np.testing.assert_array_equal(from_bytes(to_bytes(together[0])), together[0])


def test_bm25_prefers_rare_matching_terms() -> None:
    documents = [terms("kayak rental in Denver"), terms("store hours in Denver"), terms("returns within 30 days")]
    scores = bm25_scores(terms("rent a kayak"), documents)
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0
    assert terms("Returning the jackets") == ["return", "jacket"]
