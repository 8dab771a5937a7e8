"""Label stored structures with an oracle, in parallel, committing each result as it
arrives. Idempotent by structure id: structures that already have an outcome from this
oracle are skipped, and a job sent twice (after a worker died) is stored once.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ase import Atoms

from alcsp.execute import Executor, WorkerLost
from alcsp.oracle.base import FailureKind, LabelFailure, LabelResult, Oracle
from alcsp.store import CampaignStore


@dataclass
class LabelSummary:
    """What one ``label_structures`` call did."""

    requested: int = 0
    skipped: int = 0  # already had an outcome from this oracle
    labelled: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)  # kind -> count


def job_key(structure_id: int) -> str:
    """The oracle job directory name of a stored structure."""
    return f"s{structure_id:09d}"


def _label_one(oracle: Oracle, item: tuple[int, Atoms]) -> LabelResult:
    sid, atoms = item
    return oracle.label([atoms], keys=[job_key(sid)])[0]


def label_structures(
    store: CampaignStore,
    oracle: Oracle,
    structure_ids: Sequence[int],
    executor: Executor,
    iteration: int = 0,
    on_result: Callable[[int, LabelResult], None] | None = None,
) -> LabelSummary:
    """Label ``structure_ids`` with ``oracle`` on ``executor``; commit each outcome.

    A job that raises, or whose worker is lost, is stored as a ``LabelFailure`` (kind
    ``crash`` or ``worker_lost``); nothing stops the other jobs. ``on_result`` is called
    after each commit (progress bars).
    """
    summary = LabelSummary(requested=len(structure_ids))
    done = store.labelled_ids(oracle.name)
    todo = list(dict.fromkeys(int(i) for i in structure_ids if int(i) not in done))
    summary.skipped = len(structure_ids) - len(todo)
    if not todo:
        return summary
    atoms = store.get_atoms(todo)
    fn = functools.partial(_label_one, oracle)
    for res in executor.map_unordered(fn, list(zip(todo, atoms, strict=True))):
        sid = todo[res.index]
        result: LabelResult
        if res.ok:
            assert res.value is not None  # _label_one always returns a LabelResult
            result = res.value
        else:
            kind = (
                FailureKind.WORKER_LOST if isinstance(res.error, WorkerLost) else FailureKind.CRASH
            )
            result = LabelFailure(
                kind, f"{type(res.error).__name__}: {res.error}"[:2000], oracle.name
            )
        store.add_labels([(sid, result)], iteration)
        if result.ok:
            summary.labelled += 1
        else:
            summary.failed += 1
            summary.failures[result.kind.value] += 1
        if on_result is not None:
            on_result(sid, result)
    return summary
