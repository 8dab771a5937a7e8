"""A stored campaign at a glance (``alcsp status`` and the report's header): what the
store holds, read without the campaign, its model or its oracle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from alcsp.store.campaign_store import CampaignStore
from alcsp.store.records import IterationCounts, IterationRecord
from alcsp.vocab import OracleStage, Origin, Stage


def summary(directory: Path) -> dict:
    """What the campaign in ``directory`` holds; a one-line error (``StoreError``) for a
    directory that is no campaign or whose database SQLite's integrity check finds
    damaged: a summary never calls a damaged store healthy."""
    from alcsp.lock import holder

    with CampaignStore.open_checked(directory) as store:
        run = holder(directory)
        iterations = [_iteration(store, it) for it in store.iterations()]
        n_ok, n_fail = store.label_totals()
        final = store.meta("final_hull")
        relaxations = [
            {
                "stage": r.stage,
                "parent_id": r.parent_id,
                "structure_id": r.structure_id,
                "status": r.status,
                "steps": r.steps,
                "calls": r.calls,
                "reason": r.reason,
            }
            for r in store.oracle_relaxations()
        ]
        return {
            "directory": str(directory),
            "name": _name(store),
            "running": None if run is None else dataclasses.asdict(run),
            "version": store.meta("version"),
            "structures": store.count("structures"),
            "relaxations": store.count("relaxations"),
            "labels": n_ok,
            "label_failures": n_fail,
            "models": len(store.models()),
            "iterations": iterations,
            "final_hull": json.loads(final) if final else None,
            "stop_reason": store.meta("stop_reason"),
            "oracle_calls": store.oracle_calls(),
            "oracle_relaxations": relaxations,
            "final_pending": _final_pending(store),
            "energy": _energy_definition(),
            "warnings": _warnings(store),
            "failures": _failures(store),
        }


def _iteration(store: CampaignStore, it: IterationRecord) -> dict:
    """An iteration's stored summary; for one not finished, its counts so far (relaxations
    and labels are stored as they finish, the summary only at the end)."""
    counts = IterationCounts.from_json(it.counts)
    pending = 0
    if it.finished is None:
        rel = store.relaxations(iteration=it.index, method="acnn")
        if len(rel):
            counts = dataclasses.replace(
                IterationCounts.of_relaxations(rel),
                relaxed=counts.relaxed,
                selected=counts.selected,
                validation=counts.validation,
            )
        ok, failed = store.label_counts(it.index)
        counts = dataclasses.replace(counts, labelled=ok, label_failures=failed)
        if it.stage == Stage.LABEL:
            pending = max(0, counts.selected - ok - failed)
        elif it.index == 0:  # the initial structures and the reference phases
            todo = [Origin.INITIAL, Origin.REFERENCE_PHASE]
            n = sum(len(store.structure_ids(origin=o, iteration=0)) for o in todo)
            pending = max(0, n - ok - failed)
    return {
        "iteration": it.index,
        "stage": it.stage,
        "finished": it.finished is not None,
        "counts": counts.to_json(),  # IterationCounts.from_json reads it back
        "timings": it.timings,
        "stable": sorted((it.hull or {}).get("stable", {})),
        "pending": pending,
        "failed_shards": store.shard_failures(it.index),
    }


def _final_pending(store: CampaignStore) -> int:
    """Structures picked for the final stage's oracle relaxations (stored before the
    first starts) that have no finished relaxation yet; 0 before the final stage."""
    raw = store.meta("final_picks")
    if not raw:
        return 0
    picks = json.loads(raw)
    chosen = {int(i) for i in (*picks["terminals"], *(picks["compounds"] or ()))}
    done = {r.parent_id for r in store.oracle_relaxations(OracleStage.FINAL)}
    return len(chosen - done)


def _failures(store: CampaignStore) -> list[dict]:
    """Recorded oracle failures grouped by kind: count and the first one as an example."""
    groups: dict[str, dict] = {}
    for sid, _oracle, kind, reason in store.failures():
        g = groups.setdefault(
            str(kind),
            {"kind": str(kind), "count": 0, "example_structure": sid, "example_reason": reason},
        )
        g["count"] += 1
    return sorted(groups.values(), key=lambda g: -g["count"])


def _name(store: CampaignStore) -> str | None:
    """``[campaign] name`` of the stored config (None where it does not say)."""
    import tomllib

    try:
        name = tomllib.loads(store.config_text).get("campaign", {}).get("name")
    except (tomllib.TOMLDecodeError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _energy_definition() -> str:
    from alcsp.store.hulls import ENERGY_DEFINITION

    return ENERGY_DEFINITION


def _warnings(store) -> list[str]:
    from alcsp.config import ConfigError, parse_config
    from alcsp.store.hulls import terminal_warnings

    try:
        config = parse_config(store.config_text, source="the stored config")
    except ConfigError as exc:
        return [f"the stored config no longer parses: {exc}"]
    return terminal_warnings(store, config)
