"""Hybrid retrieval over one tenant's chunks: BM25 on words plus embedding cosine, fused by reciprocal rank.

Pure: the chunks, their vectors and the query vector are passed in. BM25 is computed here rather than in
SQLite FTS5 so the same ranking runs on PostgreSQL.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from switchboard.knowledge.embeddings import FloatArray

RRF_K = 60  # the constant of Cormack et al. (2009); damps the weight of the very first ranks
BM25_K1 = 1.2
BM25_B = 0.75
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "do", "does", "did", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "so", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your", "yours", "i'm", "i'd", "i'll", "i've", "can't", "don't"]
)


def _stem(word: str) -> str:
    # A light suffix stripper: enough to match "returns"/"returning"/"returned" with "return".
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + keep
    return word


def terms(text: str) -> list[str]:
    """Lower-cased, stop words removed, lightly stemmed."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


@dataclass(frozen=True, slots=True)
class RankedChunk:
    index: int  # position in the chunk list given to `rank`
    score: float  # fused reciprocal-rank score; higher is better


def bm25_scores(query_terms: list[str], documents: list[list[str]]) -> list[float]:
    n = len(documents)
    if n == 0 or not query_terms:
        return [0.0] * n
    average_length = sum(len(d) for d in documents) / n or 1.0
    document_frequency: Counter[str] = Counter()
    for document in documents:
        document_frequency.update(set(document))
    scores = []
    for document in documents:
        counts = Counter(document)
        score = 0.0
        for term in set(query_terms):
            tf = counts.get(term, 0)
            if not tf:
                continue
            df = document_frequency[term]
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * len(document) / average_length))
        scores.append(score)
    return scores


def rank(query: str, query_vector: FloatArray, chunk_texts: list[str], chunk_vectors: FloatArray, top_k: int) -> list[RankedChunk]:
    """Best `top_k` chunks, best first. Lexical ranks count only chunks sharing a term with the query."""
    if not chunk_texts:
        return []
    lexical = bm25_scores(terms(query), [terms(t) for t in chunk_texts])
    cosine = chunk_vectors @ query_vector
    fused = np.zeros(len(chunk_texts), dtype=np.float64)
    for position, index in enumerate(np.argsort(-cosine, kind="stable")):
        fused[index] += 1.0 / (RRF_K + position + 1)
    lexical_order = sorted((i for i, s in enumerate(lexical) if s > 0), key=lambda i: -lexical[i])
    for position, index in enumerate(lexical_order):
        fused[index] += 1.0 / (RRF_K + position + 1)
    best = sorted(range(len(chunk_texts)), key=lambda i: (-fused[i], -cosine[i]))[:top_k]
    return [RankedChunk(index=i, score=float(fused[i])) for i in best]
