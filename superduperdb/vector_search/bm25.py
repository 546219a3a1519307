"""BM25: the keyword engine of databases without a full-text engine of their own.

Exact Okapi BM25 (``k1`` 1.2, ``b`` 0.75) over texts keyed by string ids, in numpy: each
text is tokenized once (lower-cased runs of letters and digits, so ``0x80070005`` and
``E1234`` stay whole; English stop words dropped for ``english``; no stemming), its terms
kept as arrays; an inverted index over all of them is compiled on first search and after
large changes, and texts added since sit in a small one beside it, so adding, replacing and
deleting a text is cheap and every search sees it at once.

>>> engine = BM25()
>>> engine.add(['a', 'b', 'c'], ['disk full error', 'error 0x80070005 on write', 'all fine'])
>>> engine.search('error 0x80070005', 2)[0]
['b', 'a']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r'\w+')
_STOP = 'a an and are as at be but by for if in into is it no not of on or such that the their then there'
ENGLISH_STOP_WORDS = frozenset(_STOP.split(' ') + ['these', 'they', 'this', 'to', 'was', 'will', 'with'])


def tokenize(text: str, language: str = 'english') -> list[str]:
    words = _TOKEN.findall(text.lower())
    if language == 'english':
        return [w for w in words if w not in ENGLISH_STOP_WORDS]
    return words


class BM25:
    """An exact BM25 index of texts keyed by string ids (see the module's docstring)."""

    def __init__(self, language: str = 'english', *, k1: float = 1.2, b: float = 0.75) -> None:
        self.language, self.k1, self.b = language, k1, b
        self._vocab: dict[str, int] = {}
        self._slot: dict[str, int] = {}  # id -> slot of its current text
        self._ids: list[str | None] = []  # slot -> id (None: replaced or deleted)
        self._terms: list[np.ndarray] = []  # slot -> its terms (ids into the vocabulary)
        self._counts: list[np.ndarray] = []  # slot -> how often each occurs
        self._lengths = np.zeros(0, dtype=np.float64)
        self._alive = np.zeros(0, dtype=bool)
        self._total_length = 0.0
        # the compiled inverted index: for term t, slots[start[t]:start[t + 1]] and their tf
        self._compiled = 0  # slots covered by it
        self._start = np.zeros(1, dtype=np.int64)
        self._post_slots = np.zeros(0, dtype=np.int64)
        self._post_tf = np.zeros(0, dtype=np.float64)
        self._recent: dict[int, list[tuple[int, int]]] = {}  # term -> [(slot, tf)] since

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: str) -> bool:
        return key in self._slot

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Index ``texts`` under ``ids`` (replacing what an id had)."""
        if len(ids) != len(texts):
            raise ValueError(f'{len(ids)} ids for {len(texts)} texts')
        self.delete([i for i in ids if i in self._slot])
        first = len(self._ids)
        lengths = np.zeros(len(ids), dtype=np.float64)
        for k, (key, text) in enumerate(zip(ids, texts)):
            slot = first + k
            words = tokenize(text or '', self.language)
            vocab = self._vocab
            terms = np.fromiter(
                (vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int64, count=len(words)
            )
            unique, counts = np.unique(terms, return_counts=True)
            self._ids.append(key)
            self._terms.append(unique)
            self._counts.append(counts)
            self._slot[key] = slot
            lengths[k] = len(words)
            for term, tf in zip(unique.tolist(), counts.tolist()):
                self._recent.setdefault(term, []).append((slot, tf))
        self._lengths = np.concatenate([self._lengths, lengths])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._total_length += float(lengths.sum())
        if len(self._ids) - self._compiled > max(1000, self._compiled // 5):
            self._compile()

    def delete(self, ids: Sequence[str]) -> None:
        for key in ids:
            slot = self._slot.pop(key, None)
            if slot is None:
                continue
            self._ids[slot] = None
            self._alive[slot] = False
            self._total_length -= float(self._lengths[slot])
        dead = len(self._ids) - len(self._slot)
        if dead > max(1000, len(self._ids) // 3):
            self._compact()

    def texts_held(self) -> list[str]:
        return list(self._slot)

    def search(self, text: str, n: int, within: Sequence[str] | None = None) -> tuple[list[str], list[float]]:
        """The ``n`` ids whose texts score highest for ``text`` (any of its words), best first,
        with their scores; among ``within`` if given."""
        alive_count = len(self._slot)
        terms = {self._vocab[w] for w in tokenize(text, self.language) if w in self._vocab}
        if not terms or not alive_count or n < 1:
            return [], []
        scores = np.zeros(len(self._ids), dtype=np.float64)
        average = self._total_length / alive_count if alive_count else 1.0
        norm = self.k1 * (1 - self.b + self.b * self._lengths / max(average, 1e-9))
        for term in terms:
            slots, tf = self._postings(term)
            if not len(slots):
                continue
            df = len(slots)
            idf = math.log(1 + (alive_count - df + 0.5) / (df + 0.5))
            scores[slots] += idf * tf * (self.k1 + 1) / (tf + norm[slots])
        if within is not None:
            allowed = np.zeros(len(self._ids), dtype=bool)
            picked = [self._slot[i] for i in within if i in self._slot]
            allowed[picked] = True
            scores[~allowed] = 0.0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > n:
            top = candidates[np.argpartition(-scores[candidates], n - 1)[:n]]
        else:
            top = candidates
        order = top[np.lexsort((top, -scores[top]))]
        return [self._ids[s] for s in order], scores[order].tolist()  # type: ignore[misc]

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """The live slots holding ``term`` and how often."""
        slots = np.zeros(0, dtype=np.int64)
        tf = np.zeros(0, dtype=np.float64)
        if term + 1 < len(self._start):
            lo, hi = self._start[term], self._start[term + 1]
            slots, tf = self._post_slots[lo:hi], self._post_tf[lo:hi]
        recent = self._recent.get(term)
        if recent:
            more = np.asarray(recent, dtype=np.int64)
            slots = np.concatenate([slots, more[:, 0]])
            tf = np.concatenate([tf, more[:, 1].astype(np.float64)])
        live = self._alive[slots]
        return slots[live], tf[live]

    def _compile(self) -> None:
        """Build the inverted index over every slot (the recent postings fold into it)."""
        if self._terms:
            terms = np.concatenate(self._terms)
            counts = np.concatenate(self._counts).astype(np.float64)
            slots = np.repeat(np.arange(len(self._terms)), [len(t) for t in self._terms])
        else:
            terms = slots = np.zeros(0, dtype=np.int64)
            counts = np.zeros(0, dtype=np.float64)
        order = np.argsort(terms, kind='stable')
        self._post_slots, self._post_tf = slots[order], counts[order]
        self._start = np.searchsorted(terms[order], np.arange(len(self._vocab) + 1))
        self._compiled = len(self._terms)
        self._recent = {}

    def _compact(self) -> None:
        """Drop the slots of replaced and deleted texts, then recompile."""
        keep = np.flatnonzero(self._alive)
        self._ids = [self._ids[s] for s in keep]
        self._terms = [self._terms[s] for s in keep]
        self._counts = [self._counts[s] for s in keep]
        self._lengths = self._lengths[keep]
        self._alive = np.ones(len(keep), dtype=bool)
        self._slot = {key: slot for slot, key in enumerate(self._ids) if key is not None}
        self._compile()
