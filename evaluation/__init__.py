"""Streams, schedules, scorers, the harness and the results store: one protocol for every method."""

from .harness import Harness, compare
from .schedules import Checkpoint, Schedule
from .scorers import SCORERS, GenerationScorer, Score, Scorer, TeacherForcedScorer, WildScorer
from .store import SummaryRow
from .streams import Stream, make_stream, stream_hash

__all__ = [
    "SCORERS",
    "Checkpoint",
    "GenerationScorer",
    "Harness",
    "Schedule",
    "Score",
    "Scorer",
    "Stream",
    "SummaryRow",
    "TeacherForcedScorer",
    "WildScorer",
    "compare",
    "make_stream",
    "stream_hash",
]
