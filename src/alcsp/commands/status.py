"""``alcsp status DIR``: a summary of a campaign, also while it runs in another process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alcsp.store.records import IterationCounts
from alcsp.vocab import OracleStage


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="summarise a campaign (safe while it runs)")
    p.add_argument("directory", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.store.summary import summary

    s = summary(args.directory)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    name = f"{s['name']!r} in " if s["name"] else ""
    print(f"campaign {name}{s['directory']} (alcsp {s['version']})")
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
        c = IterationCounts.from_json(it["counts"])
        v = c.validation
        err = (
            f", model error on new labels {v.energy_mev_per_atom:.1f} meV/atom "
            f"{v.force_mev_per_a:.0f} meV/Å"
            if v
            else ""
        )
        if it["finished"]:
            state = "done"
        elif who is not None and it is s["iterations"][-1]:
            state = f"in progress ({it['stage']})"
        else:
            state = f"stopped in {it['stage']} (continue with `alcsp run {s['directory']}`)"
        if it.get("pending"):
            state += f", {it['pending']} oracle jobs pending"
        print(
            f"  iteration {it['iteration']}: {state}; relaxed {c.relaxations} "
            f"(unphysical {c.unphysical}), labelled {c.labelled}"
            f"{err}; stable: {', '.join(it['stable']) or '-'}"
        )
        bad = it.get("failed_shards") or {}
        if bad:
            key, why = next(iter(bad.items()))
            print(f"    search shards failed: {len(bad)}, e.g. {key}: {why}")
    calls = s["oracle_calls"]
    print(
        f"  oracle calls {sum(calls.values())}: " + ", ".join(f"{k} {v}" for k, v in calls.items())
    )
    for stage in OracleStage:
        rows = [r for r in s["oracle_relaxations"] if r["stage"] == stage]
        if rows:
            marks: dict[str, int] = {}
            for r in rows:
                marks[r["status"]] = marks.get(r["status"], 0) + 1
            print(
                f"  oracle relaxations ({stage}): "
                + ", ".join(f"{v} {k}" for k, v in sorted(marks.items()))
            )
    if s["final_pending"]:
        n = s["final_pending"]
        print(
            f"  final stage in progress: {n} oracle relaxations pending"
            if who is not None
            else f"  final stage stopped: {n} oracle relaxations pending "
            f"(continue with `alcsp run {s['directory']}`)"
        )
    for f in s["failures"]:
        print(
            f"  oracle failures ({f['kind']}): {f['count']}, e.g. structure "
            f"{f['example_structure']}: {f['example_reason']}"
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
