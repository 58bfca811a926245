"""WHERE THE REPORT IS DRAWN: everything written or printed from a results folder.

- ``results``: reading a results folder once into a :class:`RunResults` (the tidy table, the
  manifest, the metric directions and ranking metrics recorded at run time); statuses.
- ``leaderboard``: ranking algorithms per experiment and dataset; ``leaderboard.csv``/``.md``.
- ``analysis``: what the reports compute rather than draw: verdicts against the papers' values
  and claims, convergence-curve statistics and axis ranges.
- ``suboptimality``: benchopt's view: the training objective's gap to the best value any
  algorithm reached on the same dataset and seed, and the time to a tolerance.
- ``markdown``: ``REPRODUCTION.md`` and its matplotlib figures.
- ``figures``: the plotly figures (convergence, box plots, suboptimality), colours, log ticks.
- ``html``: the self-contained ``report.html`` (Jinja2 template in ``templates/``).
- ``measures``: per-seed times and metrics that ``compare`` tests; ``timeline``: the
  ``moebench history`` page.
- ``summary``: the end-of-run terminal summary and ``failures.md``.
- ``compare``: ``moebench compare RUN_A RUN_B``, paired tests between two runs.
- ``outputs``: the end of a run: the table written once, then every output above from it.

Nothing here consults the installed plugins: which way a metric is better is read from the
results (``metric_directions`` in ``manifest.json``). The writers take a loaded
:class:`RunResults` (or a folder's path, loaded once), so a run's outputs share one table and
one leaderboard::

    run = RunResults.load(directory)
    write_leaderboards(run); write_reproduction(run); write_failures(run); write_html(run)
"""

from .analysis import Curve, claim_rows, curve_stats, reference_rows, verdict
from .compare import Change, compare_runs, regressions
from .html import HTML_FILE, build_context, render, write_html
from .leaderboard import (
    HEADERS,
    experiment_board,
    format_rows,
    leaderboard_of,
    to_markdown,
    write_leaderboards,
)
from .markdown import REPORT_FILE, write_reproduction
from .outputs import write_run_outputs
from .results import (
    STATUSES,
    SUCCESS,
    RunResults,
    UnrecordedDirection,
    metric_direction,
    read_manifest,
    read_results,
    unsuccessful_cells,
)
from .summary import (
    FAILURES_FILE,
    failure_kinds,
    summarize,
    summary_lines,
    where_lines,
    write_failures,
)

__all__ = [
    "FAILURES_FILE", "HEADERS", "HTML_FILE", "REPORT_FILE", "STATUSES", "SUCCESS", "Change",
    "Curve", "RunResults", "UnrecordedDirection", "build_context", "claim_rows", "compare_runs",
    "curve_stats", "experiment_board", "failure_kinds", "format_rows", "leaderboard_of",
    "metric_direction", "read_manifest", "read_results", "reference_rows",
    "regressions", "render", "summarize", "summary_lines", "to_markdown", "unsuccessful_cells",
    "verdict", "where_lines", "write_failures", "write_html", "write_leaderboards",
    "write_reproduction", "write_run_outputs",
]
