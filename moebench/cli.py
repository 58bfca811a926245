"""The ``moebench`` command line.

The commands import what they run inside their functions, so that ``moebench --help`` and
``moebench list`` start without importing torch and every reader of results.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, plugins
from .errors import MoebenchError, SuiteError
from .params import describe_params

if TYPE_CHECKING:
    from .suite import ResolvedExperiment, Suite

console = Console()
err_console = Console(stderr=True)

KIND_CHOICES = ["algorithms", "datasets", "devices", "metrics", "models"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="moebench")
def main() -> None:
    """Benchmark algorithms that learn Mixture-of-Experts models."""
    previous, warnings.formatwarning = warnings.formatwarning, _warning_line
    click.get_current_context().call_on_close(lambda: setattr(warnings, "formatwarning",
                                                              previous))


_python_warning_format = warnings.formatwarning


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A ``UserWarning`` (moebench telling its user something: a rebuilt table, a skipped
    line) as one ``warning: ...`` line; other warnings as Python shows them."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return _python_warning_format(message, category, filename, lineno, line)


class JobsType(click.ParamType):
    """``--jobs``: a positive number of workers, or ``auto`` (one per usable core)."""

    name = "N|auto"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            from .execution.limits import usable_cores

            return usable_cores()
        try:
            jobs = int(text)
        except ValueError:
            jobs = 0
        if jobs < 1:
            self.fail(f"{value!r} is neither a positive number of workers nor 'auto'", param,
                      ctx)
        return jobs


class RoundType(click.ParamType):
    """``--round J/K``: ``0 <= J < K``."""

    name = "J/K"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        j, _, k = str(value).partition("/")
        try:
            round_ = (int(j), int(k))
        except ValueError:
            round_ = (-1, 0)
        if not 0 <= round_[0] < round_[1]:
            self.fail(f"{value!r} is not J/K with 0 <= J < K (e.g. 0/3: the seeds 0, 3, 6, "
                      "...)", param, ctx)
        return round_


class FiniteNumber(click.ParamType):
    """A finite number of at least ``least`` (above it when ``strict``); ``inf`` and ``nan``
    are refused: ``--factor`` and ``--time-factor`` (ratios of at least 1), ``--timeout`` and
    ``--budget-timeout`` (positive seconds; leave the option out for the suite's own limit)."""

    def __init__(self, name: str, least: float, strict: bool, what: str) -> None:
        self.name, self.least, self.strict, self.what = name, least, strict, what

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number)
                and (number > self.least if self.strict else number >= self.least)):
            self.fail(f"{value!r} is not {self.what}", param, ctx)
        return number


#: ``--timeout``, ``--budget-timeout``.
SECONDS = FiniteNumber("SECONDS", 0.0, True, "a positive, finite number of seconds")
#: ``--factor``, ``--time-factor``.
FACTOR = FiniteNumber("FACTOR", 1.0, False, "a finite ratio of at least 1 (e.g. 1.1 for 10 %)")


class FolderType(click.Path):
    """``--out``: a folder; an empty name is refused (it would mean the current folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx) -> Path:
        if isinstance(value, str) and not value.strip():
            self.fail(f"{value!r} names no folder (give '.' for the current one)", param, ctx)
        return super().convert(value, param, ctx)


def print_leaderboard(board) -> None:
    from .reports.leaderboard import HEADERS, format_rows

    for (exp, ds), group in board.groupby(["experiment", "dataset"], sort=False):
        metric = group["metric"].iloc[0]
        table = Table(title=escape(f"{exp} — {ds}  (ranked by {metric})"), title_justify="left",
                      box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1),
                      collapse_padding=True)
        for h in HEADERS:
            # short headers that never wrap ("succ ess" at 80 columns); cells fold
            short = {"median time": "time", "median iters": "iters"}.get(h, h)
            table.add_column(short, overflow="fold", no_wrap=h in ("algorithm", "mean ± std"),
                             min_width=len(short))
        for row in format_rows(group):
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)


def print_grid(experiments: list, repetition_round: tuple[int, int] | None = None) -> None:
    """``--dry-run``: the expanded grid, per experiment, and the number of cells (of the
    seeds of ``repetition_round`` only, when given)."""
    from .suite import grid_summary

    j, k = repetition_round or (0, 1)
    total = 0
    for g in grid_summary(experiments):
        seeds = len(range(j, g["repetitions"], k))
        cells = len(g["datasets"]) * len(g["algorithms"]) * seeds
        total += cells
        which = f" (round {j}/{k} of {g['repetitions']})" if repetition_round else ""
        console.print(f"[bold]{escape(g['experiment'])}[/bold]: {len(g['datasets'])} dataset "
                      f"variant(s) x {len(g['algorithms'])} algorithm variant(s) x "
                      f"{seeds} seed(s){which} = {cells} cells", highlight=False,
                      soft_wrap=True)
        console.print(f"  datasets: {escape(', '.join(g['datasets']))}", highlight=False,
                      soft_wrap=True)
        console.print(f"  algorithms: {escape(', '.join(g['algorithms']))}", highlight=False,
                      soft_wrap=True)
    console.print(f"{len(experiments)} experiment(s), {total} cells (dry run: nothing ran)",
                  highlight=False, soft_wrap=True)


#: Exit codes of ``moebench run`` (documented in docs/execution.md).
EXIT_OK, EXIT_CANNOT_RUN, EXIT_INVALID_SUITE, EXIT_STRICT = 0, 1, 2, 3


@main.command(short_help="Run a suite; write results, leaderboards and reports.")
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", default="results", show_default=True,
              type=FolderType(), help="parent results folder")
@click.option("--device", default=None, help="override the suite's device (cpu, cuda, ...)")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="override the number of repetitions (seeds) of every experiment")
@click.option("--jobs", type=JobsType(), default="1", show_default=True,
              help="worker processes (Dask: workers of the LocalCluster); 'auto': one per "
                   "usable core, each with one torch thread (throughput; cells then share "
                   "the memory bandwidth, so their times are not those of a lone cell)")
@click.option("--quick", is_flag=True,
              help="apply the suite's quick settings (fewer seeds, smaller n): a smoke run")
@click.option("--resume", is_flag=True,
              help="keep the finished cells of OUT/<suite> (done, max_iter, timeout, skipped "
                   "with the same configuration) and run the others")
@click.option("--overwrite", is_flag=True, help="discard the results already in OUT/<suite>")
@click.option("--timeout", "wall_timeout", type=SECONDS,
              default=None, help="hard wall-clock limit per cell in seconds: its worker is "
                                 "killed and the cell recorded 'timeout' (default: the suite's "
                                 "budget.wall_timeout, else 3 x budget.timeout + 120 s)")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local",
              show_default=True, help="run cells in local worker processes or as Dask tasks")
@click.option("--scheduler", default=None,
              help="address of a Dask scheduler (tcp://HOST:8786); default: a LocalCluster")
@click.option("--strict", is_flag=True,
              help="exit 3 when a cell errored or crashed, or was skipped for missing data")
@click.option("--yes", is_flag=True,
              help="run grids larger than 100,000 cells without asking")
@click.option("-e", "--experiment", "experiments", multiple=True, metavar="NAME",
              help="run only this experiment (repeatable)")
@click.option("-a", "--algorithm", "algorithms", multiple=True, metavar="NAME[p=v,...]",
              help="run only this algorithm entry (label or plugin name; repeatable); "
                   "NAME[lr=0.1] fixes a parameter, NAME[lr=[0.1,0.5]] sweeps it")
@click.option("-d", "--dataset", "datasets", multiple=True, metavar="NAME[p=v,...]",
              help="run only this dataset entry (repeatable), with parameters as for -a")
@click.option("--budget-timeout", type=SECONDS, default=None,
              help="override budget.timeout: seconds of algorithm time per cell, after which "
                   "the runner stops the algorithm (--timeout is the hard wall-clock limit)")
@click.option("--dry-run", is_flag=True,
              help="print the expanded grid (variants and cells per experiment) and exit")
@click.option("--no-report", is_flag=True, help="do not write report.html")
@click.option("--tables", is_flag=True,
              help="also print every leaderboard (they are in leaderboard.md either way)")
@click.option("--round", "repetition_round", type=RoundType(), default=None,
              help="run only the seeds r with r % K == J (J/K, e.g. 0/3): lets two runs "
                   "alternate round by round, as moebench compare-commits does; combine with "
                   "--resume to add the other rounds")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "bar", "lines", "none"]),
              default="auto", show_default=True,
              help="a bar on a terminal, plain periodic lines otherwise (auto)")
@click.option("-v", "--verbose", is_flag=True, help="show tracebacks of unexpected errors")
def run(suite_file: Path, out: Path, device: str | None, seeds: int | None, jobs: int,
        quick: bool, resume: bool, overwrite: bool, wall_timeout: float | None,
        executor: str, scheduler: str | None, strict: bool, yes: bool,
        experiments: tuple[str, ...] = (), algorithms: tuple[str, ...] = (),
        datasets: tuple[str, ...] = (), budget_timeout: float | None = None,
        dry_run: bool = False, no_report: bool = False, tables: bool = False,
        repetition_round: tuple[int, int] | None = None, progress_mode: str = "auto",
        verbose: bool = False) -> None:
    """Run SUITE_FILE and write results, leaderboards, report.html and a manifest to
    OUT/<suite>/.

    Exit codes: 0 every cell ran (some may have failed as cells), 1 the run could not start or
    go on, 2 the suite or the selection is invalid, 3 with --strict a cell errored, crashed or
    missed its data, 130 interrupted by Ctrl-C (143 by SIGTERM).
    """
    if resume and overwrite:
        err_console.print("[red]error:[/red] --resume and --overwrite exclude each other")
        sys.exit(EXIT_CANNOT_RUN)
    if scheduler and executor != "dask":
        executor = "dask"
    mode = "resume" if resume else ("overwrite" if overwrite else "new")
    with _exits_on_failure(out, verbose):
        if device:
            check_device_option(device)
        suite, resolved = _selected_suite(suite_file, device, experiments, algorithms, datasets,
                                          budget_timeout, quick=quick, seeds=seeds, yes=yes)
        check_device_available(suite.device)  # before "started", and for --dry-run too
        from .execution.limits import cap_jobs, check_memory_limit

        check_memory_limit(suite.memory_limit_bytes(), str(suite_file))
        if dry_run:
            print_grid(resolved, repetition_round)
            return
        if scheduler:  # before "started" and before the results folder exists
            from .execution.dask import reachable_scheduler

            scheduler = reachable_scheduler(scheduler)
        else:  # workers on this machine: no more than its cores and memory hold
            jobs, note = cap_jobs(jobs)
            if note:
                err_console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        directory = _run_with_progress(
            suite, resolved, out, suite_file, progress_mode, jobs=jobs, quick=quick,
            seeds=seeds, mode=mode, executor=executor, scheduler=scheduler,
            wall_timeout=wall_timeout, html_report=not no_report,
            repetition_round=repetition_round)
    print_outcome(directory, tables=tables, strict=strict)


def check_device_option(device: str) -> None:
    """``--device NAME`` must name a registered device plugin.

    Parameters
    ----------
    device
        The option's value.

    Raises
    ------
    SelectionError
        One line that blames the option, not the suite file it overrides:
        ``--device 'cudaa': unknown device; did you mean 'cuda'? (valid: cpu, cuda)``.
    """
    from .suite import SelectionError
    from .suite.problems import did_you_mean

    names = sorted(plugins.components("devices"))
    if device not in names:
        raise SelectionError(f"--device {device!r}: unknown device{did_you_mean(device, names)} "
                             f"(valid: {', '.join(names)})")


def device_availability(name: str) -> tuple[bool, str]:
    """Whether the registered device ``name`` can be used on this machine and, when it cannot,
    why, in the plugin's own words (:meth:`moebench.Device.unavailable_reason`).

    Parameters
    ----------
    name
        A registered device plugin.

    Returns
    -------
    tuple[bool, str]
        ``(True, "")`` or ``(False, reason)``; a check that raises counts as unavailable.
    """
    try:
        device = plugins.get("devices", name)()
        if device.is_available():
            return True, ""
        return False, device.unavailable_reason()
    except MoebenchError:
        raise
    except Exception as exc:  # a plugin's broken check must not hide the others' answers
        return False, (f"device {name!r} is not available: its availability check raised "
                       f"{type(exc).__name__}: {exc}")


def check_device_available(name: str) -> None:
    """Stop before anything starts (and in ``--dry-run``) when the suite's device, or the one
    ``--device`` chose, is not available on this machine.

    Raises
    ------
    MoebenchError
        ``device 'cuda' is not available: ...``, as the run itself would say (exit code 1).
    """
    available, reason = device_availability(name)
    if not available:
        raise MoebenchError(reason)


def _selected_suite(suite_file: Path, device: str | None, experiments: tuple[str, ...],
                    algorithms: tuple[str, ...], datasets: tuple[str, ...],
                    budget_timeout: float | None, *, quick: bool, seeds: int | None,
                    yes: bool) -> tuple[Suite, list[ResolvedExperiment]]:
    """The suite file parsed, with the command line's device and selection applied, and
    resolved once (the runner is handed the resolved experiments)."""
    from .suite import MAX_CELLS_WITHOUT_CONFIRMATION, load_suite, resolve, select

    suite = load_suite(suite_file)
    if device:
        lines = suite._lines
        suite = suite.model_copy(update={"device": device})
        suite._lines = lines
    suite = select(suite, experiments, algorithms, datasets, budget_timeout, str(suite_file))
    resolved = resolve(suite, str(suite_file), quick=quick, seeds=seeds,
                       max_cells=None if yes else MAX_CELLS_WITHOUT_CONFIRMATION)
    return suite, resolved


def _run_with_progress(suite: Suite, resolved: list[ResolvedExperiment], out: Path,
                       suite_file: Path, progress_mode: str, **options: Any) -> Path:
    """:func:`moebench.runner.run_suite` under the progress display."""
    from .execution.lock import FolderLock
    from .progress import RunProgress
    from .runner import run_suite

    j, k = options.get("repetition_round") or (0, 1)
    plan = [(e.name, d.id, a.id) for e in resolved for d in e.datasets
            for _ in range(j, e.repetitions, k) for a in e.algorithms]
    # the folder's lock before the display starts: a second run is refused in one line
    with FolderLock(out / suite.name), RunProgress(
            plan, err_console, jobs=options["jobs"], mode=progress_mode, title=suite.name,
            run_folder=out / suite.name) as shown:
        return run_suite(suite, out, suite_path=str(suite_file), progress=shown.progress,
                         on_cell=shown.on_cell, experiments=resolved, **options)


@contextmanager
def _exits_on_failure(out: Path, verbose: bool) -> Iterator[None]:
    """Turn what stops ``moebench run`` into a one-line message and its exit code."""
    from .runner import Interrupted
    from .suite import SelectionError, with_suggestions

    try:
        yield
    except SuiteError as exc:
        err_console.print(f"[red]error:[/red] {escape(with_suggestions(str(exc)))}",
                          highlight=False, soft_wrap=True)
        sys.exit(EXIT_INVALID_SUITE)
    except SelectionError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(EXIT_INVALID_SUITE)
    except Interrupted as exc:
        err_console.print(f"[yellow]{escape(str(exc))}[/yellow]", highlight=False,
                          soft_wrap=True)
        sys.exit(130 if exc.signum == signal.SIGINT else 128 + exc.signum)
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(with_suggestions(str(exc)))}",
                          highlight=False, soft_wrap=True)
        sys.exit(EXIT_CANNOT_RUN)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        if verbose:
            raise
        err_console.print(f"[red]error:[/red] the run stopped: {type(exc).__name__}: "
                          f"{escape(str(exc))}; the finished cells are kept in {escape(str(out))} "
                          "(run again with --resume)", highlight=False, soft_wrap=True)
        sys.exit(EXIT_CANNOT_RUN)


def print_outcome(directory: Path, *, tables: bool = False, strict: bool = False) -> None:
    """After a run: the summary per experiment, where the outputs are, the kinds of failure,
    the time accounting; with ``strict``, exit 3 when a cell errored, crashed or missed its
    data."""
    from .reports.analysis import run_headline
    from .reports.leaderboard import leaderboard_of
    from .reports.results import RunResults
    from .reports.summary import failure_kinds, summary_lines, where_lines

    loaded = RunResults.load(directory)
    results = loaded.frame
    if tables:
        print_leaderboard(leaderboard_of(loaded))
    finals = results[results["record"] == "final"]
    counts = finals["status"].value_counts().to_dict()
    print_headline(run_headline(loaded))  # first: the line a researcher runs the paper suite for
    for line in summary_lines(loaded):
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(f"results in {escape(str(directory))}  "
                  f"({', '.join(f'{k}: {v}' for k, v in counts.items())})", highlight=False,
                  soft_wrap=True)
    earlier = loaded.manifest.get("earlier_cells") or 0
    if earlier:
        console.print(f"the tables and reports cover all {len(finals)} cells of the folder: "
                      f"{earlier} from earlier runs, {len(finals) - earlier} from this one",
                      highlight=False, soft_wrap=True)
    for line in where_lines(directory):
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    problems = failure_kinds(results)
    for status, reason, count in problems[:8]:
        err_console.print(f"[yellow]{status}[/yellow] ({count} cell{'s' if count != 1 else ''})"
                          f": {escape(reason)}", highlight=False, soft_wrap=True)
    if len(problems) > 8:
        err_console.print(f"... and {len(problems) - 8} more kinds of failure: see "
                          f"{escape(str(directory / 'failures.md'))}", highlight=False)
    print_time_accounting(loaded.manifest)
    if strict:
        failed = finals["status"].isin(["error", "crashed"])
        if "cause" in finals:
            failed |= finals["cause"].eq("data-unavailable")
        if failed.any():
            err_console.print(f"[red]--strict:[/red] {int(failed.sum())} cell(s) errored, "
                              "crashed or missed their data", highlight=False)
            sys.exit(EXIT_STRICT)


def print_headline(headline: str | None) -> None:
    """``reproduction: 13 of 14 paper values consistent, ...``: the verdict on the papers'
    numbers (:func:`moebench.reports.analysis.run_headline`), when the suite has any."""
    if headline:
        console.print(f"[bold]reproduction:[/bold] {escape(headline)}", highlight=False,
                      soft_wrap=True)


def print_time_accounting(manifest: dict[str, Any]) -> None:
    """One line: where the run's time went (from the manifest's ``time_accounting``)."""
    acc = manifest.get("time_accounting")
    if not acc:
        return
    console.print(
        f"time: wall {acc['wall']:.1f} s; summed over cells: algorithms "
        f"{acc['algorithm_wall']:.1f} s wall / {acc['algorithm_cpu']:.1f} s cpu, metrics "
        f"{acc['metrics']:.1f} s, data {acc['data']:.1f} s, compilation "
        f"{acc['compilation']:.1f} s, worker start {acc['worker_start']:.1f} s "
        f"({manifest.get('jobs', 1)} worker(s))", highlight=False, soft_wrap=True)


def print_tsv(headers: list[str], rows: list[list[str]]) -> None:
    """A listing for a pipe or a file: a header line, then one tab-separated line per row,
    never wrapped or cut (whitespace inside a cell, newlines and tabs included, becomes one
    space), for ``grep``, ``cut -f`` and spreadsheets.

    Parameters
    ----------
    headers
        The column names.
    rows
        The cells of each row, as many as ``headers``.
    """
    for row in [headers, *rows]:
        click.echo("\t".join(" ".join(str(cell).split()) for cell in row))


@main.command("plugins", short_help="List installed plugins, what they register, failures.")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins_cmd(as_json: bool) -> None:
    """List installed plugins, their versions, what they register, and failures."""
    infos = plugins.plugin_infos()
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in infos], indent=2))
        return
    def registers(p: Any) -> str:
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in p.registered.items())

    headers = ["plugin", "distribution", "version", "status", "registers"]
    if not console.is_terminal:  # a pipe: one tab-separated line per plugin, for grep and cut
        print_tsv(headers, [[p.name, p.distribution or "-", p.version or "-",
                             "loaded" if p.status == "loaded" else f"failed: {p.error or ''}",
                             registers(p)] for p in infos])
        return
    table = Table(title="moebench plugins")
    for h in headers:
        table.add_column(h, overflow="fold")
    for p in infos:
        what = registers(p)
        status = ("[green]loaded[/green]" if p.status == "loaded"
                  else f"[red]failed[/red] {escape(p.error or '')}")
        table.add_row(escape(p.name), escape(p.distribution or "-"), escape(p.version or "-"),
                      status, escape(what))
    console.print(table)


@main.command("list", short_help="List algorithms, datasets, devices, metrics or models.")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_cmd(kind: str, as_json: bool) -> None:
    """List registered ALGORITHMS, DATASETS, DEVICES, METRICS or MODELS with their parameters;
    devices say whether they are available on this machine (and if not, why)."""
    found = plugins.components(kind)
    owners = plugins.load_plugins().owners[kind]
    availability = {n: device_availability(n) for n in found} if kind == "devices" else {}
    if as_json:
        out = [{"name": n, "summary": c.summary, "plugin": owners[n],
                "parameters": describe_params(c.Params)} for n, c in found.items()]
        for entry in out if availability else []:
            available, reason = availability[entry["name"]]
            entry.update(available=available, unavailable_reason=reason or None)
        click.echo(json.dumps(out, indent=2, default=str))
        return
    if not console.is_terminal:  # a pipe or a file: tab-separated, one line per parameter
        print_tsv(*component_rows(kind, found, owners, availability))
        return
    for name, cls in found.items():
        console.print(f"[bold]{escape(name)}[/bold]  {escape(cls.summary)}  "
                      f"[dim](plugin {escape(owners[name])})[/dim]", highlight=False)
        extra = []
        if kind == "metrics":
            extra.append(f"{'lower' if cls.direction == 'min' else 'higher'} is better"
                         + (", needs ground truth" if cls.requires_truth else ""))
        if name in availability:
            extra.append(f"available: {availability_text(name, *availability[name])}")
        for line in extra:
            console.print(f"    {escape(line)}", highlight=False)
        for p in describe_params(cls.Params):
            default = "required" if p["required"] else f"default {p['default']!r}"
            console.print(escape(f"    {p['name']}: {p['type']} = {default}  "
                                 f"{p['description']}"), highlight=False)


def component_rows(kind: str, found: dict[str, type], owners: dict[str, str],
                   availability: dict[str, tuple[bool, str]]
                   ) -> tuple[list[str], list[list[str]]]:
    """``moebench list KIND`` as tidy rows: one per parameter of each component (one with
    empty parameter cells for a component without parameters), the component's columns
    repeated, so that ``grep '^gd\t'`` finds all of gd and ``cut -f4,6`` its defaults.

    Returns
    -------
    tuple[list[str], list[list[str]]]
        The headers and the rows.
    """
    extra = {"metrics": ["better", "ground truth"], "devices": ["available"]}.get(kind, [])
    headers = ["name", "plugin", "summary", *extra, "parameter", "type", "default",
               "description"]
    rows = []
    for name, cls in found.items():
        own = [name, owners[name], cls.summary]
        if kind == "metrics":
            own += ["lower" if cls.direction == "min" else "higher",
                    "needed" if cls.requires_truth else "not needed"]
        if kind == "devices":
            own.append(availability_text(name, *availability[name]))
        params = [[p["name"], p["type"], "required" if p["required"] else repr(p["default"]),
                   p["description"]] for p in describe_params(cls.Params)]
        rows += [own + param for param in params or [["", "", "", ""]]]
    return headers, rows


def availability_text(name: str, available: bool, reason: str) -> str:
    """``yes``, or ``no: REASON`` without the reason's own ``device 'NAME' is not available:``
    (the column already says so)."""
    if available:
        return "yes"
    return "no: " + reason.removeprefix(f"device {name!r} is not available: ")


@main.command("report",
              short_help="Write report.html and REPRODUCTION.md for a results folder.")
@click.argument("results_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--to", "to", type=FolderType(), default=None,
              help="write report.html, REPRODUCTION.md and figures/ here (default: RESULTS_DIR)")
@click.option("--no-html", is_flag=True, help="write REPRODUCTION.md only")
def report_cmd(results_dir: Path, to: Path | None, no_html: bool) -> None:
    """Write report.html (interactive, offline) and REPRODUCTION.md (measurements beside the
    papers' numbers, with figures) for RESULTS_DIR; print the reproduction headline first,
    then where the files are."""
    from .execution.store import refuse_links
    from .reports import RunResults, write_html, write_reproduction
    from .reports.analysis import run_headline

    target = to if to is not None else results_dir
    try:
        run = RunResults.load(results_dir)
        print_headline(run_headline(run))  # first, as after moebench run
        refuse_links(target)
        paths = [write_reproduction(run, to)]
        if not no_html:
            paths.append(write_html(run, to))
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except OSError as exc:  # a folder that cannot be made or written, a full disk
        err_console.print(f"[red]error:[/red] cannot write the report into "
                          f"{escape(str(target))}: {escape(exc.strerror or str(exc))}"
                          f"{escape(f' ({exc.filename})' if exc.filename else '')}",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
    for path in paths:
        console.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)


@main.command("leaderboard",
              short_help="Recompute and print the leaderboards of a results folder.")
@click.argument("results_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def leaderboard_cmd(results_dir: Path) -> None:
    """Recompute and print the leaderboards of RESULTS_DIR (also rewrites the csv/md files)."""
    from .execution.store import refuse_links
    from .reports.leaderboard import write_leaderboards

    try:
        refuse_links(results_dir)
        board = write_leaderboards(results_dir)
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except OSError as exc:
        err_console.print(f"[red]error:[/red] cannot write the leaderboards into "
                          f"{escape(str(results_dir))}: {escape(exc.strerror or str(exc))}",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
    print_leaderboard(board)


def _data_sources() -> dict:
    """Data sources of the registered datasets: source name -> (source, dataset names)."""
    from .datafiles import DataSource

    found: dict = {}
    for name, cls in plugins.components("datasets").items():
        source = getattr(cls, "source", None)
        if isinstance(source, DataSource):
            found.setdefault(source.name, (source, []))[1].append(name)
    return found


@main.group(short_help="Find, verify and download the real datasets' files.")
def data() -> None:
    """Real datasets' files: where they are found, whether they verify, downloading them."""


@data.command("list", short_help="Show where each dataset's files are and if they verify.")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--no-verify", is_flag=True, help="do not compute checksums (faster)")
def data_list(as_json: bool, no_verify: bool) -> None:
    """Show each dataset's files: present?, where found, checksums verified."""
    from .datafiles import DATA_ENV, cache_dir, data_dir, search_places, status

    rows = []
    for source, names in _data_sources().values():
        st = status(source, check=not no_verify)
        places = [f"{label}: {root if root is not None else '(not set)'}"
                  for label, root in search_places(source)]
        rows.append({
            "searched": places,
            "source": source.name,
            "datasets": names,
            "present": st.present,
            "total": st.total,
            "where": st.where,
            "path": str(st.root) if st.root else None,
            "verified": "not checked" if (no_verify and st.root) else st.verified,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["dataset", "files present", "where", "verified"]
    cells = []
    for r in rows:
        where = (f"{r['where']}: {r['path']}" if r["where"]
                 else "not found; searched " + "; ".join(r["searched"]))
        label = ", ".join(r["datasets"])
        if label != r["source"]:
            label += f" ({r['source']})"
        cells.append([label, f"{r['present']}/{r['total']}", where, r["verified"]])
    env = data_dir()
    order = (f"searched in this order: the suite's `path` if given, ${DATA_ENV} "
             f"({env if env is not None else 'not set'}), the cache ({cache_dir()}), then "
             "Debian's folder where there is one")
    if not console.is_terminal:  # a pipe or a file: the rows alone on stdout
        print_tsv(headers, cells)
        err_console.print(escape(order), highlight=False, soft_wrap=True)
        return
    table = Table(title="moebench data")
    for h in headers:
        table.add_column(h, overflow="fold")
    for r, row in zip(rows, cells, strict=True):
        colour = "green" if r["present"] == r["total"] else "red"
        table.add_row(escape(row[0]), f"[{colour}]{row[1]}[/{colour}]", escape(row[2]),
                      escape(row[3]))
    console.print(table)
    console.print(escape(order), highlight=False, soft_wrap=True)


@data.command("fetch",
              short_help="Download a dataset's files into the cache and verify them.")
@click.argument("name")
@click.option("--force", is_flag=True, help="download again even if a verified copy exists")
def data_fetch(name: str, force: bool) -> None:
    """Download dataset NAME's files into the cache and verify their checksums."""
    from .datafiles import cache_dir, fetch, status

    sources = _data_sources()
    by_dataset = {d: src for src, names in sources.values() for d in names}
    source = sources[name][0] if name in sources else by_dataset.get(name)
    if source is None:
        err_console.print(f"[red]error:[/red] no dataset with files called {escape(name)!s}; "
                          f"choose from {', '.join(sorted(set(sources) | set(by_dataset)))}")
        sys.exit(2)
    st = status(source)
    if st.complete and st.verified == "yes" and not force:
        console.print(f"{source.name}: all {st.total} files already present and verified in "
                      f"{st.root} ({st.where}); use --force to download again")
        return
    console.print(f"{source.name}: downloading into {cache_dir() / source.subdir} ...")
    try:
        root = fetch(source, force=force)
    except (OSError, MoebenchError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    st = status(source, root)
    console.print(f"{source.name}: {st.present}/{st.total} files in {root}, verified: "
                  f"{st.verified}")


def _compare_options(command):
    """The options ``compare`` and ``compare-commits`` share."""
    options = [
        click.option("--factor", type=FACTOR, default=1.1, show_default=True,
                     help="how much worse a metric must get to count (1.1: 10 %)"),
        click.option("--time-factor", type=FACTOR, default=1.5,
                     show_default=True,
                     help="how much slower the time per iteration must get to count; times "
                          "move with the machine's state (identical code side by side on a "
                          "shared 2-core VM: 0.64-1.36x), metrics do not; 1.1 on a quiet "
                          "dedicated machine"),
        click.option("--metric", "metrics", multiple=True,
                     help="compare only this metric (repeatable; 'time' for the algorithm "
                          "time); default: time and every metric of each experiment"),
        click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=0.05, show_default=True,
                     help="significance level of the paired Wilcoxon signed-rank tests over "
                          "seeds"),
        click.option("--clock", type=click.Choice(["cpu", "wall"]), default="cpu",
                     show_default=True,
                     help="the clock of times: cpu (time spent computing; waiting for a busy "
                          "core does not count) or wall"),
        click.option("--fail-on-regression", is_flag=True,
                     help="exit 1 when a measure got significantly worse beyond its factor"),
        click.option("--only-changed/--all", "only_changed", default=None,
                     help="list only the measures marked +, - or ~ (default in a pipe), or "
                          "all of them (default on a terminal)"),
        click.option("--json", "as_json", is_flag=True,
                     help="print the comparison as JSON on stdout"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _show_comparison(result, only_changed: bool | None, as_json: bool,
                     fail_on_regression: bool) -> None:
    """Print a comparison: JSON, fixed-width lines in a pipe, a table on a terminal; exit 1
    on a regression when asked."""
    from .reports.compare import (
        change_cells,
        heading_lines,
        shown_changes,
        summary_lines,
        text_lines,
    )

    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
    elif not console.is_terminal:
        click.echo("\n".join(text_lines(result, only_changed is not False)))
    else:
        shown, hidden = shown_changes(result, bool(only_changed))
        table = Table(title=escape("\n".join(heading_lines(result))), title_justify="left",
                      box=box.SIMPLE)
        for h in ("", "A", "B", "B / A", "p", "seeds", "measure",
                  "experiment / dataset / algorithm"):
            table.add_column(h, justify="right" if h in ("A", "B", "B / A", "p", "seeds")
                             else "left")
        styles = {"+": "red", "-": "green", "~": "yellow"}
        for c in shown:
            cells = [escape(x) for x in change_cells(c)]
            table.add_row(*cells, style=styles.get(c.mark))
        table.columns[-1].overflow = "fold"  # k=2 and k=3 must not both become "synthetic-…"
        console.print(table)
        for line in hidden + summary_lines(result):
            console.print(escape(line), highlight=False, soft_wrap=True)
    if fail_on_regression and result.regressions:
        sys.exit(1)


@main.command("compare", short_help="Compare two results folders: did B get slower or worse?")
@click.argument("run_a", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_compare_options
def compare_cmd(run_a: Path, run_b: Path, factor: float, time_factor: float,
                metrics: tuple[str, ...], alpha: float, clock: str, fail_on_regression: bool,
                only_changed: bool | None, as_json: bool) -> None:
    """Compare two results folders RUN_A (base) and RUN_B (change), cell configuration by cell
    configuration, one value per seed: time per iteration (CPU clock) and every metric, with
    paired signed-rank tests over the seeds. Marks as in asv compare: + worse, - better,
    ~ beyond the factor but not significant. Run the two at the same time (or use
    compare-commits) where the machine's load changes: load slows CPU time too."""
    from .reports.compare import compare_runs

    try:
        result = compare_runs(run_a, run_b, factor=factor, metrics=list(metrics) or None,
                              alpha=alpha, clock=clock, time_factor=time_factor)
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    _show_comparison(result, only_changed, as_json, fail_on_regression)


@main.command("compare-commits", context_settings={"ignore_unknown_options": True},
              short_help="Run a suite on two git revisions and compare the runs.")
@click.argument("rev_a")
@click.argument("rev_b")
@click.argument("suite_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED)
@click.option("--history", "history_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="the history folder (default: $MOEBENCH_HISTORY, else "
                                 ".moebench/history)")
@click.option("--machine", default=None,
              help="this machine's name in the history (default: $MOEBENCH_MACHINE, else the "
                   "host name)")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="round j of K runs the seeds r with r % K == j of both revisions side by "
                   "side, so that a seed's two cells meet the same machine state; 1: one whole "
                   "run each (for revisions older than `moebench run --round`)")
@click.option("--sequential", is_flag=True,
              help="within a round, run the revisions one after the other (alternating which "
                   "goes first) instead of side by side: for one core or one GPU")
@click.option("--reuse", is_flag=True,
              help="take a revision's results from the history when it holds a complete run "
                   "with the same options, instead of running it again")
@_compare_options
def compare_commits_cmd(rev_a: str, rev_b: str, suite_file: Path, run_options: tuple[str, ...],
                        history_dir: Path | None, machine: str | None, rounds: int,
                        sequential: bool, reuse: bool, factor: float, time_factor: float,
                        metrics: tuple[str, ...], alpha: float, clock: str,
                        fail_on_regression: bool, only_changed: bool | None,
                        as_json: bool) -> None:
    """Run SUITE_FILE on revisions REV_A (base) and REV_B (change) of this git checkout, each
    in a temporary worktree with its own moebench and plugins, keep both runs in the history
    and compare them as `moebench compare` does. Options after `--` go to `moebench run`
    (e.g. `-- --seeds 6 -e makkuva`). The revisions run side by side, in rounds of seeds, so that
    a seed's two cells meet the same machine state."""
    from .history import History
    from .history.commits import repository_root, resolve_revision, run_revisions
    from .reports.compare import compare_runs

    def say(text: str) -> None:
        err_console.print(escape(text), highlight=False, soft_wrap=True)

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds: runs stopped, worktrees removed

    signal.signal(signal.SIGTERM, terminated)
    try:
        repo = repository_root(Path.cwd())
        revisions = [resolve_revision(repo, rev) for rev in (rev_a, rev_b)]
        entries = run_revisions(revisions, str(suite_file.resolve()), list(run_options),
                                history=History(history_dir), machine=machine, repo=repo,
                                reuse=reuse, rounds=rounds, sequential=sequential,
                                say=say)
        result = compare_runs(entries[0].directory, entries[1].directory, factor=factor,
                              metrics=list(metrics) or None, alpha=alpha, clock=clock,
                              time_factor=time_factor)
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: the runs were stopped and their worktrees "
                          "removed; the history keeps its earlier runs[/yellow]",
                          highlight=False, soft_wrap=True)
        sys.exit(130)
    _show_comparison(result, only_changed, as_json, fail_on_regression)


@main.command("history", short_help="Write an HTML page of every measure over the commits.")
@click.option("--history", "history_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="the history folder (default: $MOEBENCH_HISTORY, else "
                                 ".moebench/history)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("history.html"), show_default=True, help="the page to write")
@click.option("--machine", default=None, help="only this machine's results")
@click.option("--suite", default=None, help="only this suite's results")
@click.option("--clock", type=click.Choice(["cpu", "wall"]), default="cpu", show_default=True,
              help="the clock of the time plots")
def history_cmd(history_dir: Path | None, out: Path, machine: str | None, suite: str | None,
                clock: str) -> None:
    """Write an offline HTML page with every measure over the commits the history holds
    (like asv publish): per machine, suite and run options, one plot per measure, the median
    over seeds and its range per algorithm."""
    from .history import History, publish

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            page = publish(History(history_dir), out, machine=machine, suite=suite,
                           clock=clock)
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    finally:
        for warning in caught:
            err_console.print(f"[yellow]warning:[/yellow] {escape(str(warning.message))}",
                              highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(page))}", highlight=False, soft_wrap=True)


@main.command("init-plugin", short_help="Write a pip-installable plugin package to start from.")
@click.argument("name")
@click.option("--kind", type=click.Choice(["algorithm", "dataset", "metric"]),
              default="algorithm", show_default=True, help="what the plugin registers")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="where to create moebench-NAME/")
def init_plugin_cmd(name: str, kind: str, directory: Path) -> None:
    """Write a pip-installable plugin package NAME: pyproject.toml with the entry point, a
    working skeleton, a README and a pytest file running the conformance kit."""
    from .testing.scaffold import init_plugin

    try:
        root = init_plugin(name, kind, directory)  # type: ignore[arg-type]
    except MoebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    console.print(f"wrote {escape(str(root))}\n  pip install -e {escape(str(root))}\n"
                  f"  moebench plugins\n  pytest {escape(str(root / 'tests'))}", highlight=False,
                  soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
