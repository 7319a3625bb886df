"""Fluency as ROME and KnowEdit measure it: the weighted bi- and tri-gram entropy of generated text.

A model that an edit has damaged tends to repeat itself ("Paris Paris Paris ..."), and repetition lowers the
entropy of a text's n-gram distribution. Following ROME's ``compute_n_gram_entropy`` (used unchanged by
EasyEdit's ``test_generation_quality``): for n = 2 and 3, the entropy in bits of the frequency distribution
of the text's word n-grams, weighted 2/3 and 4/3 and averaged (so a text of all-distinct words of length L
scores about log2 L). Words are split like NLTK's tokenizer does for these texts: runs of word characters
and single punctuation marks.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

NS = (2, 3)
WEIGHTS = (2 / 3, 4 / 3)
_WORDS = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORDS.findall(text)


def ngram_entropy(text: str, ns: Sequence[int] = NS, weights: Sequence[float] = WEIGHTS) -> float:
    """ROME's weighted n-gram entropy of one text (0 for a text too short to hold an n-gram)."""
    tokens = words(text)
    values = []
    for n, weight in zip(ns, weights):
        counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        values.append(entropy * weight)
    return sum(values) / len(values)


def fluency(texts: Sequence[str]) -> float:
    """Mean n-gram entropy over texts (ROME's arithmetic aggregate)."""
    return sum(ngram_entropy(t) for t in texts) / len(texts)
