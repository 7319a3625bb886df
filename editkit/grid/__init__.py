"""``editkit grid``: a study's many cells (models × datasets × methods × seeds × variants), each one edit
stream in one process, run locally in worker processes or as Ray tasks, resumable and retried.

- :mod:`.plan`: the YAML plan and its cells (stable readable names, one shared ``none`` cell per group);
- :mod:`.cell`: what a worker does with one cell, on this machine or another one;
- :mod:`.executors`: local worker processes and Ray tasks;
- :mod:`.driver`: the order, the retries and ``ROOT/grid.json``.
"""

from .driver import GridResult, read_record, run_grid, status_table
from .plan import Cell, Plan, expand, read_plan

__all__ = ["Cell", "GridResult", "Plan", "expand", "read_plan", "read_record", "run_grid", "status_table"]
