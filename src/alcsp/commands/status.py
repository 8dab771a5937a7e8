"""``alcsp status DIR``: a summary of a campaign, also while it runs in another process."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from alcsp.vocab import OracleStage


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="summarise a campaign (safe while it runs)")
    p.add_argument("directory", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def summary(directory: Path) -> dict:
    from alcsp.lock import holder
    from alcsp.store import DB_NAME, CampaignStore

    if not (directory / DB_NAME).exists():
        raise FileNotFoundError(f"{directory} holds no campaign ({DB_NAME} missing)")
    run = holder(directory)
    with CampaignStore.open(directory, readonly=True) as store:
        iterations = [
            {
                "iteration": it.index,
                "stage": it.stage,
                "finished": it.finished is not None,
                "counts": it.counts,
                "timings": it.timings,
                "stable": sorted((it.hull or {}).get("stable", {})),
            }
            for it in store.iterations()
        ]
        n_ok = store.conn.execute("SELECT COUNT(*) FROM labels WHERE ok = 1").fetchone()[0]
        n_fail = store.conn.execute("SELECT COUNT(*) FROM labels WHERE ok = 0").fetchone()[0]
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
            "energy": _energy_definition(),
            "warnings": _warnings(store),
        }


def _energy_definition() -> str:
    from alcsp.campaign import ENERGY_DEFINITION

    return ENERGY_DEFINITION


def _warnings(store) -> list[str]:
    from alcsp.campaign import terminal_warnings
    from alcsp.config import ConfigError, parse_config

    try:
        config = parse_config(store.config_text, source="the stored config")
    except ConfigError as exc:
        return [f"the stored config no longer parses: {exc}"]
    return terminal_warnings(store, config)


def run(args: argparse.Namespace) -> int:
    s = summary(args.directory)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"campaign {s['directory']} (alcsp {s['version']})")
    who = s["running"]  # the holder of the campaign's run lock
    if who is None:
        print("  not running")
    else:
        print(
            f"  running (pid {who['pid']} on {who['host']})"
            if who["pid"]
            else "  running (starting)"
        )
    print(
        f"  structures {s['structures']}, ACNN relaxations {s['relaxations']}, "
        f"oracle labels {s['labels']} (+{s['label_failures']} failed), models {s['models']}"
    )
    for it in s["iterations"]:
        c = it["counts"]
        v = c.get("validation") or {}
        err = (
            f", model error on new labels {v['energy_mev_per_atom']:.1f} meV/atom "
            f"{v['force_mev_per_a']:.0f} meV/Å"
            if v
            else ""
        )
        state = "done" if it["finished"] else f"in progress ({it['stage']})"
        print(
            f"  iteration {it['iteration']}: {state}; relaxed {c.get('relaxations', 0)} "
            f"(unphysical {c.get('unphysical', 0)}), labelled {c.get('labelled', 0)}"
            f"{err}; stable: {', '.join(it['stable']) or '-'}"
        )
    calls = s["oracle_calls"]
    print(
        f"  oracle calls {sum(calls.values())}: " + ", ".join(f"{k} {v}" for k, v in calls.items())
    )
    for stage in OracleStage:
        rows = [r for r in s["oracle_relaxations"] if r["stage"] == stage]
        if rows:
            marks = {}
            for r in rows:
                marks[r["status"]] = marks.get(r["status"], 0) + 1
            print(
                f"  oracle relaxations ({stage}): "
                + ", ".join(f"{v} {k}" for k, v in sorted(marks.items()))
            )
    if s["stop_reason"]:
        print(f"  search stopped: {s['stop_reason']}")
    if s["final_hull"]:
        stable = s["final_hull"]["stable"]
        print(
            "  final hull: "
            + ", ".join(
                f"{k} {1000 * v:.1f} meV/atom"
                for k, v in sorted(stable.items(), key=lambda x: x[1])
            )
        )
    print(f"  hulls use the {s['energy']}")
    for w in s["warnings"]:
        print(f"  warning: {w}")
    return 0
