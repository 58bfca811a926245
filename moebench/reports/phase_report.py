"""The phase diagrams of a run, drawn: a plotly heatmap for report.html, a PNG, a table and the
finding for REPRODUCTION.md. The numbers come from :mod:`moebench.reports.phase`; this module
only lays them out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .figures import base_layout, figure_title, json_float
from .markdown_text import markdown_cell
from .phase import (
    FAILURE_FRACTION,
    PARAM_FACTOR,
    PhaseTable,
    axis_text,
    link_baselines,
    phase_finding,
    phase_table,
)
from .results import RunResults

__all__ = ["phase_figures", "phase_heatmap", "phase_markdown", "phase_plot", "phase_tables"]

#: Red (no seed reached the optimum) to green (every seed did).
COLORSCALE = [[0.0, "#d73027"], [0.5, "#fee08b"], [1.0, "#1a9850"]]


def phase_figures(exp: dict[str, Any]) -> list[dict[str, Any]]:
    """The phase figures an experiment of the manifest declares."""
    return [f for f in exp.get("figures") or [] if f.get("kind") == "phase"]


def phase_title(table: PhaseTable, figure: dict[str, Any]) -> str:
    """The figure's title: the suite's, or what it shows."""
    return figure.get("title") or (f"{table.algorithm} reaching {table.reference}'s optimum, "
                                   f"by {table.x} and {table.y}")


def phase_tables(exp: dict[str, Any], run: RunResults) -> list[tuple[PhaseTable, str]]:
    """Per phase figure of ``exp`` with judged or unjudged seeds: its table and title; a later
    figure of the same slice as an earlier one has that one as its ``baseline`` (its finding
    says whether its algorithm reached the optimum where the earlier one's did not)."""
    out = []
    for figure in phase_figures(exp):
        table = phase_table(run.frame, figure, exp["name"],
                            run.manifest.get("experiments") or [])
        if table.cells:
            out.append((table, phase_title(table, figure)))
    link_baselines([table for table, _ in out])
    return out


def _cell_text(table: PhaseTable, x: Any, y: Any) -> str:
    cell = table.cell(x, y)
    if cell is None:
        return "-"
    text = f"{cell.reached}/{cell.judged}"
    return text + (f" (+{cell.unjudged} unjudged)" if cell.unjudged else "")


def _fractions(table: PhaseTable) -> list[list[float | None]]:
    return [[json_float(c.fraction) if (c := table.cell(x, y)) else None for x in table.xs]
            for y in table.ys]


def phase_heatmap(table: PhaseTable, title: str) -> dict[str, Any]:
    """A plotly heatmap: the fraction of seeds that reached the optimum per setting, each
    cell annotated ``reached/judged``.

    Parameters
    ----------
    table
        :func:`~moebench.reports.phase.phase_table` of one phase figure.
    title
        The figure's title.

    Returns
    -------
    dict
        A plotly figure (categorical axes, the colour scale fixed to [0, 1]).
    """
    xs, ys = [axis_text(v) for v in table.xs], [axis_text(v) for v in table.ys]
    hover = [[f"{table.x}={x}, {table.y}={y}: {_cell_text(table, xv, yv)} seeds reached "
              "the optimum" for x, xv in zip(xs, table.xs, strict=True)]
             for y, yv in zip(ys, table.ys, strict=True)]
    data = [{"type": "heatmap", "x": xs, "y": ys, "z": _fractions(table), "zmin": 0, "zmax": 1,
             "colorscale": COLORSCALE, "xgap": 2, "ygap": 2, "text": hover,
             "hoverinfo": "text", "colorbar": {"title": {"text": "fraction"}, "len": 0.8,
                                               "thickness": 14}}]
    annotations = [{"x": x, "y": y, "text": _cell_text(table, xv, yv), "showarrow": False,
                    "font": {"size": 12, "color": "#000"}}
                   for x, xv in zip(xs, table.xs, strict=True)
                   for y, yv in zip(ys, table.ys, strict=True) if table.cell(xv, yv)]
    sub = (f"seeds where {table.algorithm}'s final {table.metric} is at most "
           f"{table.reference}'s + {table.tolerance:g} x max(1, |{table.metric}|), per "
           "setting (reached/judged)")
    layout = base_layout(figure_title(title, sub), table.x, table.y, False)
    layout["xaxis"].update({"type": "category", "showgrid": False})
    layout["yaxis"].update({"type": "category", "showgrid": False})
    layout["annotations"] = annotations
    layout["margin"]["t"] = 80
    return {"data": data, "layout": layout}


def phase_plot(table: PhaseTable, title: str) -> Any:
    """The phase diagram as a matplotlib figure (for the PNG of REPRODUCTION.md): the same
    colours and cell texts as :func:`phase_heatmap`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    cmap = LinearSegmentedColormap.from_list("phase", [(p, c) for p, c in COLORSCALE])
    fig = Figure(figsize=(1.2 * len(table.xs) + 3, 0.7 * len(table.ys) + 2.2), dpi=150,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    z = [[math.nan if v is None else v for v in row] for row in _fractions(table)]
    image = ax.imshow(z, cmap=cmap, vmin=0, vmax=1, origin="lower", aspect="auto")
    for i, y in enumerate(table.ys):
        for j, x in enumerate(table.xs):
            ax.text(j, i, _cell_text(table, x, y), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(table.xs)), [axis_text(v) for v in table.xs])
    ax.set_yticks(range(len(table.ys)), [axis_text(v) for v in table.ys])
    ax.set_xlabel(table.x)
    ax.set_ylabel(table.y)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="fraction reached")
    return fig


def phase_markdown(exp: dict[str, Any], run: RunResults, out: Path,
                   figure_dir: str) -> list[str]:
    """REPRODUCTION.md's lines for the phase figures of ``exp``: what was found, the PNG
    (written to ``out / figure_dir``) and the table of ``reached/judged`` per setting."""
    lines: list[str] = []
    for n, (table, title) in enumerate(phase_tables(exp, run)):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in exp["name"])
        file = f"{safe}__phase{n}.png"
        phase_plot(table, title).savefig(out / figure_dir / file, dpi=150)
        finding = markdown_cell(phase_finding(table))
        lines += [f"**Phase diagram: {markdown_cell(title)}.** {finding}",
                  "", f"![{markdown_cell(title)}]({figure_dir}/{file})", ""]
        lines += [f"| {markdown_cell(table.y)} \\ {markdown_cell(table.x)} | "
                  + " | ".join(markdown_cell(axis_text(x)) for x in table.xs) + " |",
                  "|---|" + "---|" * len(table.xs)]
        for y in table.ys:
            cells = []
            for x in table.xs:
                cell = table.cell(x, y)
                param = (f"; param {cell.param_reached}/{cell.param_judged}"
                         if cell is not None and cell.param_judged else "")
                cells.append(_cell_text(table, x, y) + param)
            lines.append(f"| {markdown_cell(axis_text(y))} | "
                         + " | ".join(markdown_cell(c) for c in cells) + " |")
        lines += ["", f"Cells: seeds that reached {markdown_cell(table.reference)}'s optimum / "
                  f"seeds judged; param: seeds whose final param_error is within "
                  f"{PARAM_FACTOR:g} x {markdown_cell(table.reference)}'s. A setting fails "
                  f"below {FAILURE_FRACTION:.0%}.", ""]
    return lines
