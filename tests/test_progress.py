"""What a running campaign tells its user: typed events, the live terminal display, log
lines without a terminal, and nothing with ``--quiet``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from alcsp.campaign.events import (
    CampaignStopped,
    IterationFinished,
    Notice,
    StageProgress,
    StageStarted,
    describe,
)
from alcsp.commands.progress import LiveDisplay
from alcsp.vocab import Stage
from test_campaign import TINY


def test_describe_keeps_the_log_lines_and_drops_what_only_a_display_needs() -> None:
    search = StageProgress(2, Stage.SEARCH, 8, 24, unit="structures", rate=3.25)
    assert describe(search) == "iteration 2: relaxed 8/24 (3.2 structures/s)"
    assert describe(StageProgress(1, Stage.LABEL, 9, 12, unit="oracle jobs")) is None
    assert describe(StageProgress(1, Stage.LABEL, 10, 12)) == "iteration 1: oracle jobs 10/12"
    assert describe(StageProgress(1, Stage.LABEL, 12, 12)) == "iteration 1: oracle jobs 12/12"
    assert describe(StageProgress(1, Stage.TRAIN, 10, 150, unit="steps")) is None
    assert describe(StageStarted(1, Stage.TRAIN, 150, "steps")) is None
    assert describe(Notice("PAW spheres overlap", warning=True)) == "warning: PAW spheres overlap"
    done = IterationFinished(2, 5, 24, 6, 1, ("Au", "Cu", "CuAu"))
    assert describe(done) == (
        "iteration 2 of 5 done: 24 relaxed, 6 labelled (1 failed); stable: Au, Cu, CuAu"
    )
    assert describe(IterationFinished(1, 5, 0, 0, 0)).endswith("stable: none yet")
    assert describe(CampaignStopped("oracle budget spent")) == "search stops: oracle budget spent"


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system=None), out


def test_live_display_shows_iteration_stage_bar_jobs_and_stable_set() -> None:
    console, out = _terminal()
    with LiveDisplay(console, "tiny", max_iterations=3) as live:
        live(StageStarted(1, Stage.SEARCH, 24, "structures"))
        live(StageProgress(1, Stage.SEARCH, 8, 24, unit="structures", rate=2.0))
        live.live.refresh()
        mid = out.getvalue()
        live(StageStarted(1, Stage.LABEL, 6, "oracle jobs"))
        live(StageProgress(1, Stage.LABEL, 4, 6, failed=1, unit="oracle jobs"))
        live.live.refresh()
        jobs = out.getvalue()
        live(Notice("[references] fcc Cu is 50 meV/atom below the search's Cu"))
        live(IterationFinished(1, 3, 24, 5, 1, ("Au", "Cu3Au", "Cu")))
        live.live.refresh()
    text = out.getvalue()
    assert "iteration 1 of 3" in mid and "stage: search" in mid
    assert "8/24" in mid
    assert "stage: label" in jobs and "oracle jobs 4/6 (1 failed)" in jobs
    # rich markup in a message is printed as written, not swallowed as a style
    assert "[references] fcc Cu is 50 meV/atom" in text
    assert "iteration 1 of 3 done: 24 relaxed, 5 labelled (1 failed)" in text
    assert "stable: Au, Cu3Au, Cu" in text


def test_a_campaign_emits_each_stage_in_order(tmp_path: Path) -> None:
    from alcsp.campaign import Campaign

    events: list = []
    campaign = Campaign.create(tmp_path / "c", TINY, events=events.append)
    try:
        campaign.run()
    finally:
        campaign.close()
    started = [(e.iteration, str(e.stage)) for e in events if isinstance(e, StageStarted)]
    for n in (1, 2):
        mine = [s for i, s in started if i == n]
        assert mine[:3] == ["train", "search", "label"], started
    finished = [e for e in events if isinstance(e, IterationFinished)]
    assert [e.iteration for e in finished] == [1, 2] and all(e.of == 2 for e in finished)
    assert sum(isinstance(e, CampaignStopped) for e in events) == 1
    for n in (1, 2):
        ticks = [
            e.done
            for e in events
            if isinstance(e, StageProgress) and e.iteration == n and e.stage == Stage.SEARCH
        ]
        assert ticks == sorted(ticks) and ticks[-1] == finished[n - 1].relaxed
    train = [e for e in events if isinstance(e, StageProgress) and e.stage == Stage.TRAIN]
    assert train and train[-1].done == train[-1].total == 150


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "alcsp.cli", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("quiet", [False, True])
def test_run_without_a_terminal_logs_lines_and_quiet_prints_only_the_result(
    tmp_path: Path, quiet: bool
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace("max_iterations = 2", "max_iterations = 1"))
    proc = _run([str(config), "--dir", "c", *(["--quiet"] if quiet else [])], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stable phases" in proc.stdout
    if quiet:
        assert proc.stderr == ""
        return
    lines = proc.stderr.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), lines[:5]
    assert any("iteration 1: relaxed" in line for line in lines)
    assert any("iteration 1 of 1 done" in line for line in lines)
    assert any("search stops:" in line for line in lines)
