"""Streams, schedules, scorers, the harness and the results store: one protocol for every method."""

from .harness import Harness, compare
from .schedules import Checkpoint, Schedule
from .scorers import SCORERS, GenerationScorer, Score, Scorer, TeacherForcedScorer, WildScorer
from .schema import EditRow, ResultRow, RoutingRow, SummaryRow, TimingRow
from .streams import Stream, make_stream, stream_hash

__all__ = [
    "SCORERS",
    "Checkpoint",
    "EditRow",
    "GenerationScorer",
    "Harness",
    "ResultRow",
    "RoutingRow",
    "Schedule",
    "Score",
    "Scorer",
    "Stream",
    "SummaryRow",
    "TeacherForcedScorer",
    "TimingRow",
    "WildScorer",
    "compare",
    "make_stream",
    "stream_hash",
]
