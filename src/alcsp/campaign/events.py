"""What a running campaign tells its user: typed events, one sink.

The loop emits events; it never prints. ``alcsp run`` subscribes a live terminal display
(``alcsp.commands.run``) or, without a terminal, log lines through ``logging``; tests
subscribe a list. ``describe`` gives the one-line text of an event (``None`` for the
progress ticks, which only a live display shows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from alcsp.vocab import Stage


@dataclass(frozen=True)
class Notice:
    """Something the user should read: a decision, a skipped step, a warning."""

    text: str
    iteration: int | None = None
    warning: bool = False


@dataclass(frozen=True)
class StageStarted:
    """Iteration ``iteration`` entered ``stage``; ``total`` units of work (structures to
    relax, oracle jobs, training steps) when known."""

    iteration: int
    stage: Stage | str  # a Stage, or an oracle-relaxation stage ("references", "final")
    total: int | None = None
    unit: str = ""


@dataclass(frozen=True)
class StageProgress:
    """``done`` of ``total`` units of the current stage finished, ``failed`` of them failed."""

    iteration: int
    stage: Stage | str
    done: int
    total: int
    failed: int = 0
    unit: str = ""
    rate: float | None = None  # units per second so far

    def line(self) -> str | None:
        """The log line: every search shard; oracle jobs every tenth and the last."""
        if self.stage == Stage.SEARCH:
            rate = f" ({self.rate:.1f} structures/s)" if self.rate is not None else ""
            return f"iteration {self.iteration}: relaxed {self.done}/{self.total}{rate}"
        if self.stage == Stage.LABEL and (self.done % 10 == 0 or self.done == self.total):
            return f"iteration {self.iteration}: oracle jobs {self.done}/{self.total}"
        return None


@dataclass(frozen=True)
class IterationFinished:
    """Iteration ``iteration`` of ``of`` is done; ``stable`` is the DFT hull's stable set."""

    iteration: int
    of: int
    relaxed: int
    labelled: int
    label_failures: int
    stable: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CampaignStopped:
    """The search stopped (converged, budget spent, iteration limit) for ``reason``."""

    reason: str


Event = Notice | StageStarted | StageProgress | IterationFinished | CampaignStopped
EventSink = Callable[[Event], None]


def describe(event: Event) -> str | None:
    """The log line of ``event``; ``None`` for what only a live display shows."""
    match event:
        case Notice(text=text, warning=warning):
            return f"warning: {text}" if warning else text
        case StageStarted():
            return None  # the loop says in a Notice what a stage will do
        case StageProgress() as e:
            return e.line()
        case IterationFinished() as e:
            stable = ", ".join(e.stable) if e.stable else "none yet"
            return (
                f"iteration {e.iteration} of {e.of} done: {e.relaxed} relaxed, {e.labelled} "
                f"labelled ({e.label_failures} failed); stable: {stable}"
            )
        case CampaignStopped(reason=reason):
            return f"search stops: {reason}"
    return None


def ignore(event: Event) -> None:
    """The sink of a campaign nobody watches."""
