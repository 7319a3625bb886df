"""Free answers compared with a reference the way QA benchmarks do (SQuAD's normalisation, token F1).

A freely generated answer is judged as text, not as tokens: "The Eiffel Tower." and "eiffel tower" are the
same answer. Normalisation lower-cases, drops punctuation and the articles a/an/the, and collapses
whitespace; exact match compares normalised strings and token F1 their bags of words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation (any Unicode punctuation), no articles, single spaces."""
    text = text.lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(answer: str, reference: str) -> float:
    return float(normalize_answer(answer) == normalize_answer(reference))


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of precision and recall of the normalised words; two empty answers agree (1.0), one
    empty answer agrees with nothing (0.0)."""
    ours, theirs = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not ours or not theirs:
        return float(ours == theirs)
    common = sum((Counter(ours) & Counter(theirs)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def first_line(text: str) -> str:
    """The answer a model gives before it starts a new line (leading blank lines skipped)."""
    return text.lstrip().split("\n", 1)[0].strip()


def first_line_done(text: str) -> bool:
    """Whether more text appended to ``text`` can no longer change :func:`first_line` of it."""
    return "\n" in text.lstrip()
