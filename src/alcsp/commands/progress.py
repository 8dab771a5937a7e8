"""What ``alcsp run`` shows while a campaign runs: a live display on a terminal, log lines
through ``logging`` otherwise (a file, a pipe, a batch job), nothing but the result with
``--quiet``. Both subscribe to the campaign's events (``alcsp.campaign.events``)."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from alcsp.campaign.events import (
    CampaignStopped,
    Event,
    IterationFinished,
    Notice,
    StageProgress,
    StageStarted,
    describe,
)

LOG = logging.getLogger("alcsp.run")


class LogLines:
    """Each event's line (``describe``) as an INFO record of the ``alcsp.run`` logger
    (warnings as WARNING), timestamped by the handler ``log_to_stderr`` installs."""

    def __call__(self, event: Event) -> None:
        line = describe(event)
        if line is None:
            return
        if isinstance(event, Notice) and event.warning:
            LOG.warning(line)
        else:
            LOG.info(line)


def log_to_stderr() -> None:
    """Log lines ``HH:MM:SS message`` on stderr for the ``alcsp.run`` logger."""
    if LOG.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


class LiveDisplay:
    """A rich live display: a header (campaign, iteration k of N, stage, oracle jobs done
    and failed, the current DFT stable set), one bar per stage with its rate and ETA, and
    the notices printed above it as they come. Use as a context manager around the run."""

    def __init__(self, console: Console, name: str, max_iterations: int):
        self.console = console
        self.name = name
        self.max_iterations = max_iterations
        self.iteration: int | None = None
        self.stage = "starting"
        self.stable: tuple[str, ...] = ()
        self.jobs = (0, 0, 0)  # done, failed, total of the current labelling
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            expand=False,
        )
        self._task: TaskID | None = None
        self._started = 0.0
        self.live = Live(
            Group(Text(""), self.bars), console=console, refresh_per_second=4, transient=True
        )
        self._redraw()

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.__exit__(kind, exc, tb)

    def _header(self) -> Text:
        it = (
            "iteration 0 (initial data)"
            if self.iteration == 0
            else f"iteration {self.iteration} of {self.max_iterations}"
            if self.iteration is not None
            else ""
        )
        done, failed, total = self.jobs
        jobs = f"  oracle jobs {done}/{total} ({failed} failed)" if total else ""
        stable = ", ".join(self.stable) if self.stable else "none yet"
        return Text.assemble(
            (f"{self.name}  ", "bold"),
            (f"{it}  stage: {self.stage}", "cyan"),
            jobs,
            f"\nstable: {stable}",
        )

    def _redraw(self) -> None:
        self.live.update(Group(self._header(), self.bars))

    def __call__(self, event: Event) -> None:
        match event:
            case StageStarted(iteration=n, stage=stage, total=total, unit=unit):
                self.iteration = n if stage not in ("references", "final") else self.iteration
                self.stage = str(stage)
                if self._task is not None:
                    self.bars.remove_task(self._task)
                self._task = self.bars.add_task(f"{stage} ({unit})", total=total, rate="")
                self._started = time.perf_counter()
                if str(stage) == "label":
                    self.jobs = (0, 0, total or 0)
            case StageProgress(done=done, total=total, failed=failed, unit=unit):
                if self._task is not None:
                    dt = max(time.perf_counter() - self._started, 1e-9)
                    self.bars.update(
                        self._task, completed=done, total=total, rate=f"{done / dt:.2f} {unit}/s"
                    )
                if str(event.stage) == "label":
                    self.jobs = (done, failed, total)
            case IterationFinished() as e:
                self.stable = e.stable
                self.console.print(Text(describe(e) or "", style="bold"))
            case CampaignStopped() | Notice():
                line = describe(event)
                if line:
                    style = "yellow" if isinstance(event, Notice) and event.warning else "dim"
                    stamp = time.strftime("%H:%M:%S")
                    self.console.print(Text.assemble((stamp, "dim"), " ", (line, style)))
        self._redraw()
