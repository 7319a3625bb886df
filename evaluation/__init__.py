"""Streams, schedules, scorers, the harness and the results store: one protocol for every method."""
