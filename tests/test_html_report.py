"""``report.html`` (benchmark.report.html): self-contained, escaped, and rendered by a real headless Chromium.

The fast tests read the page as text. The browser test loads it in headless Chromium and asserts what
a reader would see: no console error (failed resource loads included), every image decoded, every
given table and figure id and every section heading present; it saves a full-page screenshot to
``tmp_path`` and, when ``BENCH_SCREENSHOT_DIR`` is set, to that folder too.

How the browser is driven, and why: Chromium's own DevTools protocol over a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), with nothing but the
standard library. It needs only Debian's ``chromium`` package; no driver binary whose version must
match the browser's, no PyPI package (selenium's own dependency tree and its Selenium Manager, which
tries to download a driver when none is on PATH) and no WebSocket client or debugging port. Selenium
would still have to go through the protocol for the two things asserted here that WebDriver lacks for
Chrome: a full-page screenshot and the log of failed resource loads. The pipe is how Playwright and
Puppeteer (``pipe: true``) drive Chromium, so Chromium's makers keep it working. When no
browser is found or it does not start, the test is skipped with the reason, never passed silently;
``.ci/run`` installs ``chromium`` with apt-get where it can.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmark.report.html import SECTIONS, render_html, write_html
from benchmark.report.paper import PAPER_DIR, build_tables, report_spec
from benchmark.report.paper_text import to_html
from benchmark.report.render import build_report
from benchmark.suite.report_spec import FIGURES

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT = 60.0  # seconds for one protocol answer; a cold start on a loaded 2-core machine takes a few


# --- the page as text ------------------------------------------------------------------------------------

def paper_inputs(results: Path, report: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, Path]]]:
    """The paper tables and figures ``bench report --format html`` embeds: ``(id, caption, html)`` and
    ``(id, caption, png)``."""
    tables = [(f"table-{t.name}", t.title, to_html(t)) for t in build_tables(report, report_spec(report))]
    figures = [(f"fig-{stem}", stem, results / PAPER_DIR / f"{stem}.png") for stem in FIGURES]
    return tables, figures


@pytest.fixture(scope="module")
def page(paper_results: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list, list]:
    """``report.html`` as ``bench report --format html`` writes it into a copy of the paper results after
    a failing ``bench check`` (its ``check.json`` in the page): ``(path, report, tables, figures)``."""
    from benchmark.cli import main

    work = tmp_path_factory.mktemp("html")
    results = work / "paper"
    shutil.copytree(paper_results, results)
    shutil.rmtree(results / PAPER_DIR)  # written by `bench run`; --format html writes them again
    (results / "report.html").unlink()
    baseline = work / "baseline.csv"
    assert main(["check", str(results), "--write-baseline", str(baseline)]) == 0
    rows = pd.read_csv(baseline, keep_default_na=False)
    rows.loc[(rows.metric == "robust_accuracy").idxmax(), "value"] += 0.5  # a baseline far above: a regression
    rows.to_csv(baseline, index=False)
    assert main(["check", str(results), "--baseline", str(baseline)]) == 1
    assert main(["report", str(results), "--format", "html"]) == 0
    report = build_report(results)
    tables, figures = paper_inputs(results, report)
    assert all(png.is_file() for _, _, png in figures)
    return results / "report.html", report, tables, figures


CHECK = {"command": "bench check results/paper --baseline base.csv", "mode": "baseline", "baseline": "base.csv",
         "leaderboard": None, "confidence": 0.99, "floor": 0.005, "strict": False, "passed": False, "exit_code": 1,
         "verdict": "bench check FAILED against base.csv: 1 ok, 1 regression, 0 improvements beyond tolerance",
         "rows": [{"model": "std-seed0", "evaluation": "pgd", "eps": 0.1, "eps_label": "Linf 0.1",
                   "metric": "robust_accuracy", "against": "baseline", "reference": 0.6, "value": 0.4,
                   "difference": -0.2, "tolerance": "±5.00", "status": "regression", "failing": True,
                   "shown": {"reference": "60.00", "value": "40.00", "difference": "-20.00", "tolerance": "±5.00"}},
                  {"model": "at", "evaluation": "clean", "eps": 0.0, "eps_label": "", "metric": "accuracy",
                   "against": "baseline", "reference": 0.9, "value": 0.9, "difference": 0.0, "tolerance": "±5.00",
                   "status": "ok", "failing": False}]}


def test_the_page_is_self_contained_valid_html5(page: tuple[Path, Any, list, list]) -> None:
    path, report, tables, figures = page
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text and '<meta charset="utf-8">' in text
    links = re.findall(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?([^"'\s>]*)""", text, re.I)
    assert links and all(u.startswith(("data:image/png;base64,", "#")) for u in links), \
        [u[:40] for u in links if not u.startswith(("data:", "#"))]
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|url\(|@import|<script|<link", text, re.I)
    assert text.count("data:image/png;base64,") == len(figures)
    ids = re.findall(r'\bid="([^"]*)"', text)
    assert len(ids) == len(set(ids))  # anchors are unique
    for anchor in re.findall(r'href="#([^"]*)"', text):
        assert anchor in ids
    for section in SECTIONS.values():
        if section != "Warnings":  # nothing is missing or damaged here
            assert f">{section}</h2>" in text
    assert "bench check FAILED" in text and "--write-baseline" not in text  # the latest check's check.json
    assert text.count('<tr class="st-fail">') == 1  # its one failing row, marked
    assert "The gradient-masking audit was not run" in text  # the paper suite disables it
    assert "robust_accuracy.png" not in text  # embedded, not linked
    assert "version of torch" in text and "git commit" in text  # one stored cell's provenance


def test_names_from_the_suite_are_escaped(page: tuple[Path, Any, list, list]) -> None:
    hostile = "<script>alert(1)</script> & co"
    report = replace(page[1], robust=page[1].robust.rename(index={page[1].robust.index[0]: hostile},
                                                           columns={"clean": "a&b<i>"}),
                     tables=[replace(page[1].tables[0], caption=hostile)],
                     damaged={"f" * 20: f"cells/x.parquet: model {hostile}"},
                     audit=pd.DataFrame([{"model": hostile, "check": "gradients", "status": "fail",
                                          "detail": "x < y & z"}]))
    check = CHECK | {"rows": [CHECK["rows"][0] | {"model": hostile}]}
    text = render_html(report, title=hostile, tables=[("t&<", hostile, "<table><tr><td>1</td></tr></table>")],
                       figures=[], check=check)
    assert "<script" not in text and "<i>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text and "a&amp;b&lt;i&gt;" in text
    assert 'id="t&amp;&lt;"' in text and "x &lt; y &amp; z" in text
    assert '<tr class="st-fail">' in text and 'class="status st-fail"' in text


def test_missing_and_damaged_cells_are_named_in_a_warning_box(page: tuple[Path, Any, list, list]) -> None:
    report = replace(page[1], missing=3, damaged={"abc123": "cells/abc123.parquet: checksum mismatch"})
    text = render_html(report, title="t", tables=[], figures=[])
    box = text[text.index('<section id="sec-warnings">'):text.index("</section>", text.index("sec-warnings"))]
    assert "3 planned cell(s) are not in the store yet" in box
    assert '"alert bad"' in box and "abc123" in box and "checksum mismatch" in box
    assert text.index("sec-warnings") < text.index("sec-tables")  # seen first
    assert '<a href="#sec-warnings">Warnings</a>' in text
    assert "sec-warnings" not in render_html(page[1], title="t", tables=[], figures=[])


def test_a_folder_without_stored_cells_still_renders(paper_results: Path, tmp_path: Path) -> None:
    shutil.copy(paper_results / "manifest.json", tmp_path / "manifest.json")  # planned, nothing stored
    report = build_report(tmp_path)
    path = write_html(report, tmp_path, tables=[], figures=[("f", "gone", tmp_path / "absent.png")])
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report.html" and not list(tmp_path.glob(".*.tmp"))
    assert "No stored cell to read provenance from" in text and "No tables yet" in text
    assert f"{report.missing} planned cell(s) are not in the store yet" in text and report.missing > 0
    assert "sec-check" not in text  # no check.json here
    assert 'id="f"' in text and "absent.png could not be read" in text and "<img" not in text


# --- the page in a real browser --------------------------------------------------------------------------

class BrowserUnavailable(RuntimeError):
    """No browser was found, or it did not start or answer."""


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (see the module doc)."""

    def __init__(self, exe: str, profile: Path):
        import fcntl  # POSIX only, like the pipe itself

        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # The browser reads commands on its fd 3 and writes answers on its fd 4. A tiny Python trampoline
        # moves the pipe ends there and execs the browser (no preexec_fn, which is unsafe with threads);
        # copies at 10 and above first, so that moving one onto 3 or 4 cannot clobber the other.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        os.close(to_browser)
        os.close(from_browser)
        args = [exe, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-sandbox",
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1",
                "about:blank"]
        trampoline = ("import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
                      "os.close(a); os.close(b); os.execvp(sys.argv[3], sys.argv[3:])")
        profile.mkdir(parents=True, exist_ok=True)
        self.stderr = profile / "stderr.txt"
        try:
            with self.stderr.open("wb") as err:
                self.proc = subprocess.Popen([sys.executable, "-c", trampoline, *map(str, ends), *args],
                                             stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=ends)
        finally:
            for fd in ends:
                os.close(fd)
        self._next = 0
        self._answers: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._lock:
                            self._answers.setdefault(message["id"], queue.Queue()).put(message)
                    else:
                        self.events.put(message)
        self.events.put({"method": "closed"})

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send a command and wait for its answer.

        Raises:
            BrowserUnavailable: no answer within :data:`TIMEOUT` (the browser died or hangs).
            RuntimeError: the browser answered with an error.
        """
        with self._lock:
            self._next += 1
            ident = self._next
            answer = self._answers.setdefault(ident, queue.Queue())
        message = {"id": ident, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                reply = answer.get(timeout=0.2)
                break
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise BrowserUnavailable(f"the browser exited ({self.proc.returncode}) before answering {method}: "
                                             f"{self.stderr_tail()}") from None
                if time.monotonic() > deadline:
                    raise BrowserUnavailable(f"no answer to {method} within {TIMEOUT:g} s: {self.stderr_tail()}") \
                        from None
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str, session: str, seen: list[dict]) -> None:
        """Wait for event ``method`` of ``session``, keeping every event met on the way in ``seen``."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return
        raise AssertionError(f"no {method} within {TIMEOUT:g} s")

    def stderr_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-800:] if self.stderr.exists() else ""

    def close(self) -> None:
        try:
            os.close(self._to_browser)  # a browser on a pipe quits when its pipe closes
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among protocol events."""
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            out.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            out.append(f"load failed: {params.get('errorText')}")
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """A started headless Chromium; skips with the reason when there is none or it does not start."""
    exe = os.environ.get("BENCH_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if exe is None:
        pytest.skip(f"no Chromium or Chrome on PATH (looked for {', '.join(BROWSERS)}; set BENCH_CHROMIUM or "
                    f"`apt-get install chromium`)")
    try:
        chromium = Chromium(exe, tmp_path_factory.mktemp("chromium-profile"))
    except OSError as exc:
        pytest.skip(f"{exe} cannot be run: {exc}")
    try:
        chromium.send("Browser.getVersion")
    except (BrowserUnavailable, OSError) as exc:
        chromium.close()
        pytest.skip(f"{exe} did not start: {exc}")
    yield chromium
    chromium.close()


def load(browser: Chromium, url: str, width: int = 1280) -> tuple[str, list[dict]]:
    """Open ``url`` in a new tab, wait for its load event; returns the tab's session and the events so far."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1,
                 mobile=False)
    events: list[dict] = []
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired", session, events)
    browser.send("Runtime.evaluate", session, expression="1", awaitPromise=True)  # let queued events arrive
    while not browser.events.empty():
        events.append(browser.events.get_nowait())
    return session, [e for e in events if e.get("sessionId") == session]


def evaluate(browser: Chromium, session: str, expression: str) -> Any:
    """The JSON value of a JavaScript expression in the tab."""
    result = browser.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"].get("value")


def screenshot(browser: Chromium, session: str) -> bytes:
    """A PNG of the whole page, not only the viewport."""
    size = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.send("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
    return base64.b64decode(shot["data"])


def test_the_error_collector_sees_errors(browser: Chromium, tmp_path: Path) -> None:
    # Guards the browser test against passing because nothing is collected.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html lang="en"><meta charset="utf-8"><title>x</title>'
                   '<img src="absent.png" alt="x"><script>console.error("boom")</script></html>')
    _, events = load(browser, bad.as_uri())
    found = errors(events)
    assert any("boom" in e for e in found) and any("absent.png" in e or "ERR_FILE_NOT_FOUND" in e for e in found), \
        found


def test_the_page_renders_in_headless_chromium(browser: Chromium, page: tuple[Path, Any, list, list],
                                               tmp_path: Path) -> None:
    path, _, tables, figures = page
    session, events = load(browser, path.resolve().as_uri())
    assert errors(events) == []
    images = evaluate(browser, session, "[...document.images].map(i => ({alt: i.alt, complete: i.complete, "
                                        "width: i.naturalWidth, height: i.naturalHeight}))")
    assert len(images) == len(figures)
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 and i["alt"] for i in images), images
    for ident, _, _ in [*tables, *figures]:
        assert evaluate(browser, session, f"document.getElementById({json.dumps(ident)}) !== null"), ident
    assert evaluate(browser, session, "document.querySelectorAll('#table-main table.paper').length") == 1
    assert evaluate(browser, session, "document.querySelectorAll('#table-main thead tr').length") == 2
    headings = evaluate(browser, session, "[...document.querySelectorAll('h2')].map(h => h.textContent)")
    assert headings == [h for h in SECTIONS.values() if h != "Warnings"]
    # Nothing wider than the page: wide tables scroll inside their own box.
    assert evaluate(browser, session, "document.documentElement.scrollWidth <= window.innerWidth")
    png = screenshot(browser, session)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "report.png").write_bytes(png)
    if os.environ.get("BENCH_SCREENSHOT_DIR"):
        folder = Path(os.environ["BENCH_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.png").write_bytes(png)
