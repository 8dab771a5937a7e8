"""The campaign report as a reader sees it: a real EMT campaign (the TINY config of
test_campaign.py), its report written and opened in headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
null-terminated JSON on file descriptors 3 and 4), so no Python package beyond the standard
library is needed. ``scripts/install_chromium.sh`` (run by ``make test``, and by the fixture
when no Chromium is on PATH) installs Debian's ``chromium``; where it cannot (no apt, not
root) the browser tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alcsp.campaign import Campaign
from alcsp.report import write_report

sys.path.insert(0, str(Path(__file__).parent))
from test_campaign import TINY  # noqa: E402

pytest.importorskip("matplotlib")
pytest.importorskip("plotly")

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _chromium() -> str | None:
    for exe in BROWSERS:
        path = shutil.which(exe)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium and a minimal DevTools-protocol client over its pipe."""

    def __init__(self, exe: str, profile: Path):
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        res_r, res_w = os.pipe()  # Chromium writes replies and events on fd 4

        def child():  # dup first: dup2 onto the same number would leave it close-on-exec
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.log = (profile.parent / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            close_fds=False,
            preexec_fn=child,
            stdout=self.log,
            stderr=self.log,
        )
        os.close(cmd_r)
        os.close(res_w)
        self.w, self.r = cmd_w, res_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.r], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("Chromium sent nothing in time")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        for k, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(k)
        deadline = time.time() + timeout
        while True:
            m = self._message(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=page.session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=page.session)
        self.wait_for("Page.loadEventFired", timeout=60)
        page.eval("new Promise(r => setTimeout(r, 300))")  # late errors and renders
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)
        self.log.close()


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def eval(self, expression: str):
        r = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen on this page."""
        out = []
        for m in self.browser.events:
            if m.get("sessionId") != self.session:
                continue
            p = m.get("params", {})
            if m.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description', d['text'])}")
            elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in (
                "error",
                "assert",
            ):
                out.append("console: " + " ".join(str(a.get("value")) for a in p["args"]))
            elif m.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if _chromium() is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install_chromium.sh")], check=False, timeout=900
        )
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium: run scripts/install_chromium.sh as root on Debian/Ubuntu")
    b = Chromium(exe, tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report") / "tiny"
    c = Campaign.create(directory, TINY)
    try:
        c.run()
    finally:
        c.close()
    return directory


@pytest.fixture(scope="module")
def report(campaign):
    calls = []

    def cages(directory: Path) -> str:
        calls.append(directory)
        return "<h2 id='cages'>Cage analysis</h2><p>3 cages</p>"

    def broken(directory: Path) -> str:
        raise RuntimeError("no cages here")

    path = write_report(campaign, campaign / "report", extra_sections=[cages, broken])
    assert calls == [campaign]
    return path


def _png_ok(data: bytes) -> bool:
    """A PNG signature and an IHDR chunk of a non-empty image."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width > 100 and height > 100 and data[-8:-4] == b"IEND"


def test_report_files_and_contents(report, campaign):
    out = report.parent
    page = report.read_text()
    for name in ("learning_curves.png", "hull.png"):
        assert _png_ok((out / name).read_bytes()), name
    # the two figures are inlined: the page stands alone
    assert page.count('src="data:image/png;base64,') == 2
    # human headers with units, not snake_case
    for header in (
        "E<sub>hull</sub> (meV/atom)",
        "Formation enthalpy (meV/atom)",
        "Volume (Å³/atom)",
        "Density (g/cm³)",
        "Space group",
        "Structure id",
        "Origin",
        "Oracle calls",
        "Core-hours",
        "Seed",
        "Search stopped",
        "Selection rule",
        "Structures optimised",
        "Converged",
    ):
        assert header in page, header
    assert "e_hull_mev" not in page and "wall_time_s" not in page
    assert "<details><summary>Campaign config" in page and 'name = "tiny"' in page
    assert "max_iterations = 2 reached" in page and "rule paper, C_max 3" in page
    # extra sections: in order, a failing one shows its error instead of failing the report
    assert page.index("id='cages'") < page.index("This section failed")
    assert "RuntimeError: no cages here" in page
    # the stored phases keep their machine names; volumes and densities are physical
    phases = json.loads((out / "phases.json").read_text())
    assert phases and all(2 < p["density"] < 25 and 8 < p["volume_per_atom"] < 25 for p in phases)
    assert {p["composition"] for p in phases if p["e_hull_mev"] <= 1e-6} >= {"Cu", "Au"}


def test_learning_curves_match_the_stored_validation(report, campaign):
    """Model n re-evaluated on the labels of iteration n gives the RMSE the campaign stored
    (no label of this campaign is beyond train_max_force), split into groups."""
    from alcsp.store import CampaignStore

    errors = json.loads((report.parent / "learning_curves.json").read_text())
    with CampaignStore.open(campaign, readonly=True) as store:
        its = {it.index: it for it in store.iterations()}
    assert sorted(errors) == ["1", "2"]
    for n, e in errors.items():
        stored = its[int(n)].counts["validation"]
        assert e["source"] == "evaluated"
        assert e["all"]["n"] == stored["n_structures"] == e["minima"]["n"] + e["failures"]["n"]
        assert e["all"]["energy_rmse"] == pytest.approx(stored["energy_mev_per_atom"], rel=1e-6)
        assert e["all"]["force_rmse"] == pytest.approx(stored["force_mev_per_a"], rel=1e-6)
        assert e["all"]["stress_rmse"] == pytest.approx(stored["stress_gpa"], rel=1e-6)
        assert e["all"]["energy_median"] <= e["all"]["energy_rmse"]


def test_report_in_headless_chromium(report, browser):
    page = browser.open(report.as_uri())
    assert page.errors() == []
    figures = page.eval(
        "[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert [f[0] for f in figures] == ["learning_curves.png", "hull.png"]
    assert all(ok and w > 300 and h > 300 for _, ok, w, h in figures), figures
    assert page.eval("document.querySelectorAll('table').length") >= 6
    assert page.eval("document.querySelector('details summary').textContent").startswith(
        "Campaign config"
    )
    link = page.eval("document.querySelector('a[href=\"hull.html\"]') !== null")
    assert link


def test_interactive_hull_works_offline(report, browser):
    path = report.parent / "hull.html"
    text = path.read_text()
    # plotly's JavaScript is inlined: no script from the network, none from a file
    assert not re.search(r"<script[^>]+src=", text)
    assert "https://cdn" not in text.split("</script>")[-1]
    assert len(text) > 1_000_000  # plotly.js itself
    page = browser.open(path.as_uri())
    assert page.errors() == []
    assert page.eval("typeof Plotly") == "object"
    n_points = page.eval("document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length")
    assert n_points >= 2
    title = page.eval("document.querySelector('.gtitle').textContent")
    assert "Cu–Au at 0 GPa" in title and "emt" in title


def test_chromium_client_sees_errors(tmp_path, browser):
    """The browser check is not vacuous: an error, an exception and a missing image show."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!doctype html><html><body><script>console.error('boom');"
        "nothing();</script><img src='missing.png'></body></html>"
    )
    errors = browser.open(bad.as_uri()).errors()
    assert any("boom" in e for e in errors)
    assert any("nothing is not defined" in e for e in errors)
    assert any("missing.png" in e for e in errors)


def test_report_before_any_label(tmp_path):
    """A campaign just created: a report with empty curves and no hull, no error."""
    from alcsp.store import CampaignStore

    CampaignStore.create(tmp_path / "c", TINY).close()
    page = write_report(tmp_path / "c").read_text()
    assert "No hull yet" in page and "learning_curves.png" in page


def test_hull_join_rule():
    """The join of a 4+-element report: the caller's, else the config's, else chosen."""
    from types import SimpleNamespace

    from alcsp.compositions import Join
    from alcsp.report import _hull_join
    from test_hull_plot import _bepno

    lh = SimpleNamespace(hull=_bepno())

    def cfg(*joins):
        return SimpleNamespace(
            compositions=SimpleNamespace(joins=joins), campaign=SimpleNamespace(report_ehull=0.05)
        )

    assert _hull_join(cfg(), lh, "BeO,P2O5")[0] == ("BeO", "P2O5")
    config_join = Join(("BeO", "P3N5"), 2)
    assert _hull_join(cfg(config_join), lh, None) == (
        ("BeO", "P3N5"),
        "the first join of the config's [compositions]",
    )
    chosen, why = _hull_join(cfg(Join(("BeO", "BeP4"), 2)), lh, None)  # BeP4: no label
    assert chosen == ("BeO", "P2O5", "P3N5") and "stable phases" in why
