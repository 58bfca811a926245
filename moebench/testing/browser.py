"""Open a ``report.html`` in headless Chromium and check it, through the DevTools protocol.

Used by ``tests/reports/test_html_report.py`` and to take the screenshots in ``docs/``::

    python -m moebench.testing.browser results/paper/report.html --screenshots docs/

It starts Debian's ``chromium`` (``apt-get install chromium``) headless with a throw-away
profile, loads the page from ``file://``, and reports console errors, uncaught exceptions,
failed requests and any request that is not to a ``file:`` or ``data:`` URL (the report must
work offline); it checks that every plot rendered (a non-empty SVG), clicks a leaderboard
header and checks that the row order changed, and saves screenshots.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
         "--remote-allow-origins=*"]


def find_chromium() -> str | None:
    """Path of a Chromium executable, or ``None``."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why the browser check cannot run here (``None``: it can)."""
    if find_chromium() is None:
        return "chromium is not installed (apt-get install chromium)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "the websocket-client package is not installed"
    return None


@dataclass
class CheckResult:
    """What :func:`check_report` found."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    plots: int = 0
    empty_plots: list[str] = field(default_factory=list)
    sorted_ok: bool | None = None
    bare_log_ticks: list[str] = field(default_factory=list)
    legend_texts: list[str] = field(default_factory=list)
    clipped_ticks: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    #: Per plot, its title and axis types: ``{"id", "title", "x", "y"}``.
    plot_axes: list[dict[str, str]] = field(default_factory=list)
    sort_detail: str = ""
    screenshots: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"console: {m}" for m in self.console_errors]
        out += [f"failed request: {m}" for m in self.failed_requests]
        out += [f"network request: {m}" for m in self.foreign_requests]
        out += [f"empty plot: {m}" for m in self.empty_plots]
        out += [f"log axis tick without its magnitude: {m}" for m in self.bare_log_ticks]
        out += [f"tick label cut off at the figure's edge: {m}" for m in self.clipped_ticks]
        out += [f"drawn over each other: {m}" for m in self.overlaps]
        if self.sorted_ok is False:
            out.append(f"clicking a leaderboard header did not change the order "
                       f"({self.sort_detail})")
        return out


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> bool:
        """Collect events until ``method`` arrives (``True``) or the timeout (``False``)."""
        import websocket

        if any(e["method"] == method for e in self.events):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return True
        return False

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression[:60]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode}")
        if marker.is_file():
            lines = marker.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s")


def _page_ws(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
        targets = json.loads(resp.read())
    pages = [t for t in targets if t.get("type") == "page"]
    if not pages:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/new?about:blank",
                                    timeout=10) as resp:
            pages = [json.loads(resp.read())]
    return pages[0]["webSocketDebuggerUrl"]


def _event_problems(events: list[dict[str, Any]], result: CheckResult) -> None:
    requests: dict[str, str] = {}
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            result.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            result.console_errors.append(
                d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            result.console_errors.append(p["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            requests[p.get("requestId", "")] = url
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                result.foreign_requests.append(url)
        elif method == "Network.loadingFailed":
            url = requests.get(p.get("requestId", ""), "?")
            result.failed_requests.append(f"{url}: {p.get('errorText')}")


_PLOTS_JS = """
(() => {
  const out = [];
  document.querySelectorAll('div.plot').forEach(div => {
    const svg = div.querySelector('svg.main-svg');
    const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = div.querySelectorAll('.js-line,g.point,path.box,.js-fill,.hm image').length;
    const logs = [];
    ['x', 'y'].forEach(a => {
      const axis = div.layout && div.layout[a + 'axis'];
      if (axis && axis.type === 'log' && axis.tickmode !== 'array') {  // plotly's own ticks
        div.querySelectorAll('.' + a + 'tick text').forEach(t => logs.push(t.textContent));
      }
    });
    const legend = Array.from(div.querySelectorAll('.legendtext')).map(t => t.textContent);
    const clipped = [];  // tick labels drawn (partly) outside the figure
    div.querySelectorAll('.xtick text, .ytick text').forEach(t => {
      const b = t.getBoundingClientRect();
      if (b.width && (b.left < r.left - 1 || b.right > r.right + 1 || b.top < r.top - 1
                      || b.bottom > r.bottom + 1)) { clipped.push(t.textContent); }
    });
    // parts of the figure drawn over each other (an axis title on the legend, a title under
    // the modebar, an axis title through its tick labels)
    const box = el => {
      const b = el && el.getBoundingClientRect();
      return b && b.width ? b : null;
    };
    const hit = (a, b) => a && b && a.left < b.right - 1 && b.left < a.right - 1
      && a.top < b.bottom - 1 && b.top < a.bottom - 1;
    const legendBox = box(div.querySelector('g.legend rect.bg'));
    const modebar = box(div.querySelector('.modebar'));
    const parts = {
      'x axis title': box(div.querySelector('.g-xtitle text')),
      'y axis title': box(div.querySelector('.g-ytitle text')),
      'title': box(div.querySelector('.g-gtitle text')),
      'buttons': box(div.querySelector('g.updatemenu-container')),
    };
    const overlaps = [];
    const pair = (n1, a, n2, b) => { if (hit(a, b)) { overlaps.push(n1 + ' / ' + n2); } };
    pair('x axis title', parts['x axis title'], 'legend', legendBox);
    pair('title', parts['title'], 'modebar', modebar);
    pair('title', parts['title'], 'buttons', parts['buttons']);
    pair('buttons', parts['buttons'], 'modebar', modebar);
    div.querySelectorAll('.xtick text').forEach(t => pair('x tick ' + t.textContent, box(t),
                                                          'legend', legendBox));
    div.querySelectorAll('.ytick text').forEach(t => pair('y tick ' + t.textContent, box(t),
                                                          'y axis title', parts['y axis title']));
    const title = div.querySelector('.gtitle');
    const types = {};
    ['x', 'y'].forEach(a => {
      const axis = div._fullLayout && div._fullLayout[a + 'axis'];
      types[a] = axis ? axis.type : null;
    });
    out.push({id: div.id, width: r.width, height: r.height, marks: marks, logTicks: logs,
              legend: legend, clipped: clipped, title: title ? title.textContent : '',
              overlaps: overlaps,
              axes: types});
  });
  return out;
})()
"""

#: The first leaderboard with two algorithms or more (its id), or null.
_PICK_JS = """
(() => {
  const t = Array.from(document.querySelectorAll('table.leaderboard')).find(t =>
    new Set(Array.from(t.tBodies[0].rows).map(r => r.cells[2].textContent.trim())).size > 1);
  return t ? t.id : null;
})()
"""
_ORDER_JS = """
(() => Array.from(document.getElementById(%s).tBodies[0].rows)
   .map(r => r.cells[2].textContent.trim() + '|' + r.cells[0].textContent.trim()))()
"""


def _click(tools: DevTools, selector: str) -> None:
    """A real mouse click (pressed and released) at the centre of the element."""
    box = tools.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                   clickCount=1)


def _screenshot(tools: DevTools, path: Path, selector: str | None) -> Path:
    if selector:
        # below the page's sticky navigation bar, which would cover the element's top
        found = tools.evaluate(f"(() => {{ const el = document.querySelector("
                               f"{json.dumps(selector)}); if (!el) {{ return false; }}"
                               " el.scrollIntoView(); const nav = document.querySelector('nav');"
                               " window.scrollBy(0, -(nav ? nav.offsetHeight + 8 : 0));"
                               " return true; })()")
        if not found:
            raise ValueError(f"no element of the page matches {selector!r} (for {path.name})")
    else:
        tools.evaluate("window.scrollTo(0, 0)")
    tools.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 200)))")
    shot = tools.call("Page.captureScreenshot", format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def check_report(html: str | Path, screenshots: str | Path | None = None,
                 shots: list[tuple[str, str | None]] | None = None,
                 width: int = 1400, height: int = 1000, timeout: float = 120.0) -> CheckResult:
    """Load ``html`` in headless Chromium and check it (see the module docstring).

    Parameters
    ----------
    html
        The report file.
    screenshots
        Folder for PNG screenshots (none when ``None``).
    shots
        ``(file name, CSS selector to scroll to)`` pairs; default: the top of the page and the
        first experiment's plots.
    width, height
        Viewport size in CSS pixels.
    timeout
        Seconds to wait for the page and its plots.

    Returns
    -------
    CheckResult
        Console errors, failed or foreign requests, plot counts, whether sorting worked and
        the screenshot paths; ``.problems`` lists what is wrong.
    """
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    html = Path(html).resolve()
    result = CheckResult()
    # Chromium's helper processes may still write into the profile after the browser exits:
    # the whole process group is stopped, and a file left behind does not fail the check
    with tempfile.TemporaryDirectory(prefix="moebench-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        tools = None
        try:
            port = _devtools_port(Path(profile), process, timeout=30)
            tools = DevTools(_page_ws(port), timeout=timeout)
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                       deviceScaleFactor=1, mobile=False)
            tools.events.clear()
            tools.call("Page.navigate", url=html.as_uri())
            if not tools.wait_for("Page.loadEventFired", timeout):
                result.console_errors.append(f"the page did not load within {timeout} s")
                return result
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and tools.evaluate(
                    "window.moebenchRendered === undefined"):
                time.sleep(0.2)
            plots = tools.evaluate(_PLOTS_JS)
            result.plots = len(plots)
            result.empty_plots = [p["id"] for p in plots
                                  if p["width"] < 50 or p["height"] < 50 or p["marks"] == 0]
            # plotly labels a log axis's minor ticks with bare digits ("1000 5 2 100 5 2"),
            # which read as values: a log axis must label its ticks in full (explicit ticks)
            result.legend_texts = [t for p in plots for t in p.get("legend") or []]
            result.clipped_ticks = [f"{p['id']}: {t!r}" for p in plots
                                    for t in p.get("clipped") or []]
            result.overlaps = [f"{p['id']}: {o}" for p in plots for o in p.get("overlaps") or []]
            result.plot_axes = [{"id": p["id"], "title": p.get("title") or "",
                                 **(p.get("axes") or {})} for p in plots]
            result.bare_log_ticks = [f"{p['id']}: {t!r}" for p in plots
                                     for t in p.get("logTicks") or []
                                     if re.fullmatch(r"\s*[2-9]\s*", t)]
            table = tools.evaluate(_PICK_JS)
            if table is not None:
                order = _ORDER_JS % json.dumps(table)
                header = f"#{table} th:nth-child(3)"
                before = tools.evaluate(order)
                _click(tools, header)  # by algorithm, ascending
                first = tools.evaluate(order)
                _click(tools, header)  # descending
                second = tools.evaluate(order)
                up = [r.split("|")[0].lower() for r in first]
                down = [r.split("|")[0].lower() for r in second]
                result.sorted_ok = (up == sorted(up) and down == sorted(down, reverse=True)
                                    and (first != before or second != before))
                result.sort_detail = f"{table}: before {before[:4]}, after {first[:4]}"
                _click(tools, f"#{table} th:nth-child(2)")  # back to rank order
            if screenshots is not None:
                tools.call("Input.dispatchMouseEvent", type="mouseMoved", x=0, y=0)
                folder = Path(screenshots)
                for name, selector in shots or [("report-top.png", None),
                                                ("report-plots.png", "div.plot")]:
                    result.screenshots.append(_screenshot(tools, folder / name, selector))
            tools.wait_for("Never.happens", 0.3)  # collect late events
            _event_problems(tools.events, result)
        finally:
            if tools is not None:
                tools.close()
            _stop_group(process)
    return result


def _stop_group(process: subprocess.Popen) -> None:
    """Stop Chromium and its helper processes (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshots", type=Path, default=None)
    parser.add_argument("--shot", action="append", default=[],
                        help="NAME.png=CSS-SELECTOR (repeatable; default: top and first plots)")
    args = parser.parse_args(argv)
    shots = [tuple(s.split("=", 1)) if "=" in s else (s, None) for s in args.shot] or None
    try:
        result = check_report(args.html, args.screenshots, shots)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sorting = {True: "works", False: "FAILED", None: "not checked (no sortable table)"}
    print(f"{result.plots} plots rendered; sorting {sorting[result.sorted_ok]}")
    for path in result.screenshots:
        print(f"screenshot {path}")
    for problem in result.problems:
        print(f"problem: {problem}")
    return 1 if result.problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
