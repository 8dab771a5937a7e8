"""Discovery benchmark: do alcsp campaigns find the best-known hull of an EMT system?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/discovery.py Cu-Au --seeds 1,2,3 \\
        --rules paper --json /tmp/discovery-cuau.json --keep /tmp/discovery-cuau
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/discovery.py Cu-Au --seeds 1-5 \\
        --rules paper,committee

The true answer is the best-known hull ``benchmarks/data/best-known/<system>.json`` and
``.extxyz`` (made by ``benchmarks/best_known.py``), not a brute force over a campaign's own
candidates. For each seed, and for each selection rule in turn (rules interleaved per seed,
so that a run cut short has compared the rules on the same seeds), this runs a campaign
through the Python API (``Campaign.create(...).run()``) with the system's config
(``examples/demo-cuau-emt.toml`` for Cu-Au, ``benchmarks/discovery-<system>.toml``
otherwise, or ``--config``) with ``[campaign] seed`` and every ``[[selection]]`` table's
``rule`` overridden, and prints

* whether the campaign's stable set is exactly the best-known one (by composition);
* the largest |formation energy - best-known| over the best-known stable phases (meV/atom),
  the campaign's lowest oracle label of each composition put on the best-known terminals'
  scale (so a campaign terminal above the best-known one shows as an error of that
  terminal); a best-known phase the campaign's hull lacks is a *miss*;
* a loud warning when a phase of the campaign's hull lies more than 1 meV/atom *below* the
  best-known hull: then the best-known hull is wrong and must be re-established;
* oracle calls, all of them (``CampaignStore.oracle_calls()``: single points of every
  iteration and every step of the reference and final oracle relaxations) and their share
  of the brute force's EMT calls stored with the best-known hull;
* wall and CPU time (this process and its children);

then per rule the seeds with the exact set and the median calls. ``--json FILE`` writes all
of it. Unless ``--no-diagnose``, every best-known compound is traced through the store
(and printed when the campaign missed it or got it wrong by more than ``--tol``): was its
structure ever generated and relaxed by ACNN (a structure counts as the best-known one when, of the
best-known file's structures of its composition, that is the one it fits best: pymatgen
StructureMatcher, volume-normalised), how did ACNN rank it within its composition, was it
labelled, was it relaxed by the final stage. Campaign directories go to a temporary
directory unless ``--keep DIR`` (where a finished campaign is reused, not rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
from ase.io import read
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition
from pymatgen.io.ase import AseAtomsAdaptor

ROOT = Path(__file__).resolve().parent.parent
BEST_KNOWN = ROOT / "benchmarks" / "data" / "best-known"
BELOW_HULL_FLAG = 1.0  # meV/atom


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- config
def derive_config(text: str, seed: int, rule: str | None) -> str:
    """``text`` with ``[campaign] seed = seed`` and, unless ``rule`` is None, ``rule = rule``
    in every ``[[selection]]`` table (any rule line there replaced)."""
    out: list[str] = []
    table = None
    seed_done = False
    header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
    for line in text.splitlines():
        m = header.match(line)
        if m:
            if table == "campaign" and not seed_done:
                out.append(f"seed = {seed}")
                seed_done = True
            table = m.group(2)
            out.append(line)
            if table == "selection" and m.group(1) == "[[" and rule is not None:
                out.append(f'rule = "{rule}"')
            continue
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if table == "campaign" and key == "seed":
            out.append(f"seed = {seed}" + ("  # set by benchmarks/discovery.py"))
            seed_done = True
            continue
        if table == "selection" and key == "rule" and rule is not None:
            continue
        out.append(line)
    if table == "campaign" and not seed_done:
        out.append(f"seed = {seed}")
    if rule is not None and "[[selection]]" not in text:
        out += ["", "[[selection]]", f'rule = "{rule}"']
    return "\n".join(out) + "\n"


def config_for(path: Path, seed: int, rule: str) -> str:
    """The derived config text, validated; a clear error when the config (this alcsp)
    does not accept the rule. For "paper" on an alcsp without a ``rule`` field (it knows
    only the paper's rule) the field is left out."""
    from alcsp.config import ConfigError, parse_config

    base = path.read_text()
    text = derive_config(base, seed, rule)
    try:
        parse_config(text, source=f"{path} with seed {seed}, rule {rule!r}")
        return text
    except ConfigError as exc:
        msg = str(exc)
        if rule == "paper" and "rule" in msg and "unknown fields" in msg:
            text = derive_config(base, seed, None)
            parse_config(text, source=f"{path} with seed {seed}")
            return text
        sys.exit(
            f"discovery: the config {path} rejects selection rule {rule!r} "
            f"([[selection]] rule = {rule!r}): {msg}\nThis alcsp does not offer that rule "
            "(or the config needs more for it); run with --rules paper, or add the rule."
        )


# ---------------------------------------------------------------------------- best-known
class BestKnown:
    """The best-known hull: stable set, energies per atom, and its structures."""

    def __init__(self, system: str, directory: Path = BEST_KNOWN):
        from alcsp.hull import build_hull

        jpath = directory / f"{system}.json"
        xpath = directory / f"{system}.extxyz"
        if not jpath.is_file() or not xpath.is_file():
            sys.exit(
                f"discovery: no best-known hull for {system} ({jpath} and {xpath}); make it "
                f"with `benchmarks/best_known.py {' '.join(system.split('-'))}`"
            )
        self.data = json.loads(jpath.read_text())
        self.elements = tuple(self.data["elements"])
        self.structures = list(read(xpath, index=":"))
        keys = [a.info["composition"] for a in self.structures]
        e = [a.get_potential_energy() / len(a) for a in self.structures]
        self.hull = build_hull(keys, e, elements=self.elements)
        self.stable = {
            self.hull.keys[self.hull.comp_index[i]]: int(i) for i in self.hull.stable_indices
        }
        if set(self.stable) != set(self.data["stable_set"]):
            sys.exit(f"discovery: {xpath} and {jpath} disagree on the stable set")
        self.mu = {el: float(self.hull.enthalpy[self.stable[el]]) for el in self.elements}
        self.brute_calls = (self.data.get("brute_force") or {}).get("emt_calls")

    def reference(self, key: str) -> float:
        """Energy per atom of the best-known terminals mixed at composition ``key``."""
        comp = Composition(key).fractional_composition
        return sum(float(x) * self.mu[el.symbol] for el, x in comp.items())

    def formation(self, key: str) -> float:
        return float(self.hull.formation[self.stable[key]])

    def hull_energy(self, key: str) -> float:
        """Best-known hull energy per atom at any composition of the system."""
        return float(self.hull.phase_diagram.get_hull_energy_per_atom(Composition(key)))

    def structure(self, key: str):
        return self.structures[self.stable[key]]


# ---------------------------------------------------------------------------- one campaign
def run_campaign(directory: Path, text: str, base_dir: Path, quiet: bool) -> dict:
    """Run (or continue) the campaign in ``directory``; wall and CPU seconds of this call,
    or of the first run when it had finished before (kept in ``discovery-run.json``)."""
    from alcsp.campaign import Campaign
    from alcsp.store import DB_NAME

    stamp = directory / "discovery-run.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())

    def say(msg: str) -> None:
        if not quiet:
            log(f"  {msg}")

    t0, c0 = time.perf_counter(), time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    resumed = (directory / DB_NAME).exists()
    if resumed:  # a run killed before it finished: continued, timed from here
        campaign = Campaign.open(directory, say=say)
    else:
        campaign = Campaign.create(directory, text, say=say, base_dir=base_dir)
    try:
        campaign.run()
    finally:
        campaign.close()
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(
            time.process_time()
            - c0
            + (ch1.ru_utime - ch0.ru_utime)
            + (ch1.ru_stime - ch0.ru_stime),
            1,
        ),
        "resumed": resumed,
    }
    stamp.write_text(json.dumps(timing))
    return timing


def evaluate(directory: Path, best: BestKnown, tol: float, diagnose: bool) -> dict:
    """Compare the campaign in ``directory`` with the best-known hull."""
    from alcsp.config import parse_config
    from alcsp.store import CampaignStore
    from alcsp.store.hulls import labelled_hull

    with CampaignStore.open(directory, readonly=True) as store:
        cfg = parse_config(store.config_text)
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, best.elements)
        calls_by_stage = store.oracle_calls()
        calls = int(sum(calls_by_stage.values()))
        iterations = len([it for it in store.iterations() if it.index > 0])
        if lh is None:
            found: dict[str, float] = {}
            lowest: dict[str, float] = {}
            found_sid: dict[str, int] = {}
        else:
            h = lh.hull
            found = {h.keys[h.comp_index[i]]: float(h.enthalpy[i]) for i in h.stable_indices}
            found_sid = {h.keys[h.comp_index[i]]: lh.structure_id(int(i)) for i in h.stable_indices}
            lowest = {h.keys[c]: float(h.enthalpy[h.best_index[c]]) for c in range(len(h.keys))}
        phases = {}
        errors = []
        for key in sorted(best.stable):
            ref = best.reference(key)
            row = {
                "best_known_mev": round(best.formation(key) * 1000, 3),
                "stable_in_campaign": key in found,
            }
            if key in lowest:
                row["campaign_mev"] = round((lowest[key] - ref) * 1000, 3)
                row["error_mev"] = round((lowest[key] - ref - best.formation(key)) * 1000, 3)
            if key in found:
                errors.append(abs(row["error_mev"]))
            phases[key] = row
        missed = sorted(set(best.stable) - set(found))
        space = set(store.compositions())
        outside = sorted(k for k in best.stable if k not in space)
        extra = sorted(set(found) - set(best.stable))
        below = {}
        for key, e in found.items():
            d = (e - best.hull_energy(key)) * 1000
            if d < -BELOW_HULL_FLAG:
                below[key] = round(d, 3)
        result = {
            "exact_set": not missed and not extra,
            # the campaign's stable phases, formation energies on the best-known terminals
            "stable_mev": {
                k: round((e - best.reference(k)) * 1000, 3) for k, e in sorted(found.items())
            },
            "missed": missed,
            "outside_composition_space": outside,  # best-known phases it cannot find
            "extra": extra,
            "max_abs_error_mev": round(max(errors), 3) if errors else None,
            "phases": phases,
            "below_best_known_hull_mev": below,
            "oracle_calls": calls,
            "oracle_calls_by_stage": calls_by_stage,
            "share_of_brute_force": (
                round(calls / best.brute_calls, 4) if best.brute_calls else None
            ),
            "iterations": iterations,
            "labels": store.count("labels"),
            "acnn_relaxations": store.count("relaxations"),
            "repeated_basins": repeated_basins(store, cfg.oracle.name),
        }
        if diagnose:
            # every best-known compound, found or not: how it was found is the contrast
            result["diagnosis"] = {}
            for k in sorted(set(best.stable) - set(best.elements)):
                dg = trace(store, cfg, best, k, found_sid.get(k))
                dg["lost"] = k in missed or abs(phases[k].get("error_mev", math.inf)) > tol
                result["diagnosis"][k] = dg
    return result


def repeated_basins(store, oracle: str) -> dict:
    """Labelled ACNN minima (origin ``relaxed``) and how many of them are the same structure
    (``_matcher``) as a label of an earlier iteration: oracle calls spent on a basin the
    oracle had already seen."""
    from alcsp.vocab import Origin, composition_key

    labels = [a for a in store.training_set(oracle) if a.info["origin"] == Origin.RELAXED]
    sm = _matcher()
    seen: dict[str, list[tuple[int, object]]] = {}
    repeated = 0
    for a in sorted(labels, key=lambda a: (a.info["iteration"], a.info["structure_id"])):
        s = AseAtomsAdaptor.get_structure(a)
        own = seen.setdefault(composition_key(a.get_chemical_formula()), [])
        if any(it < a.info["iteration"] and sm.fit(t, s) for it, t in own):
            repeated += 1
        own.append((a.info["iteration"], s))
    return {"labelled_minima": len(labels), "repeated": repeated}


def _matcher() -> StructureMatcher:
    # volume-normalised (ACNN and EMT volumes differ), pymatgen's default tolerances
    return StructureMatcher(
        ltol=0.2, stol=0.3, angle_tol=5, primitive_cell=True, scale=True, attempt_supercell=True
    )


def _sg_number(atoms) -> int:
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=0.1)
    return 0 if data is None else int(data.number)


class _Classifier:
    """Which of the best-known file's structures of one composition (the stable one and
    every distinct structure within 10 meV/atom of the hull) a structure is: the one it fits
    with the smallest RMS displacement (pymatgen StructureMatcher, volume-normalised). A fit
    alone would take close relatives for the stable phase (B2 and L1_0 fit B19 CuAu, D0_22
    fits D0_19 Cu3Au); the nearest known structure does not. It must also have the target's
    space group (spglib, 0.1 Å): a relaxation keeps its start's symmetry, and the nearest
    stored structure can still be another minimum that is not stored (a P2_1/c CuAu 15
    meV/atom above the hull was counted as B19 before this check)."""

    def __init__(self, best: BestKnown, key: str):
        self.sm = _matcher()
        own = [a for a in best.structures if a.info["composition"] == key]
        self.refs = [AseAtomsAdaptor.get_structure(a) for a in own]
        target = best.structure(key)
        self.target = next(i for i, a in enumerate(own) if a is target)
        self.number = _sg_number(target)

    def is_target(self, atoms) -> bool:
        try:
            if _sg_number(atoms) != self.number:
                return False
            s = AseAtomsAdaptor.get_structure(atoms)
            if self.sm.get_rms_dist(s, self.refs[self.target]) is None:
                return False  # the usual case: not even a loose fit
            rms = [self.sm.get_rms_dist(s, r) for r in self.refs]
        except Exception:  # a degenerate geometry
            return False
        d = [np.inf if r is None else r[0] for r in rms]
        return int(np.argmin(d)) == self.target


def trace(store, cfg, best: BestKnown, key: str, found_sid: int | None) -> dict:
    """Where the best-known structure of ``key`` went in the campaign: generated (ACNN
    relaxations that end in it), its rank by ACNN enthalpy in its composition and iteration,
    labelled, final-relaxed; and what the campaign put at ``key`` instead."""
    from alcsp.compositions import composition_key

    cls = _Classifier(best, key)
    rel = store.relaxations(method="acnn")
    comp = np.array([composition_key(c) for c in rel.composition], dtype=object)
    own = np.nonzero(comp == key)[0]
    labelled = store.labelled_ids(cfg.oracle.name, include_failures=False)
    final = {r.parent_id: r for r in store.oracle_relaxations("final")}
    atoms = store.get_atoms([int(rel.structure_id[k]) for k in own])
    hits = []
    for k, a in zip(own, atoms, strict=True):
        if rel.status[k] != "converged":
            continue
        if not cls.is_target(a):
            continue
        it = int(rel.iteration[k])
        peers = [j for j in own if rel.iteration[j] == it and rel.status[j] == "converged"]
        rank = 1 + sum(rel.enthalpy_per_atom[j] < rel.enthalpy_per_atom[k] for j in peers)
        sid = int(rel.structure_id[k])
        hits.append(
            {
                "iteration": it,
                "structure_id": sid,
                "acnn_rank": int(rank),
                "of": len(peers),
                "labelled": sid in labelled,
                "final_relaxed": sid in final,
            }
        )
    # every labelled structure of the composition that is the best-known structure
    data = [
        a
        for a in store.training_set(cfg.oracle.name)
        if composition_key(a.get_chemical_formula()) == key
    ]
    lab_hits = []
    for a in data:
        if cls.is_target(a):
            lab_hits.append(
                {
                    "structure_id": int(a.info["structure_id"]),
                    "origin": a.info["origin"],
                    "iteration": int(a.info["iteration"]),
                    "formation_mev": round(
                        (a.get_potential_energy() / len(a) - best.reference(key)) * 1000, 3
                    ),
                }
            )
    instead = None
    if data:
        low = min(data, key=lambda a: a.get_potential_energy() / len(a))
        from alcsp.store.hulls import space_group as _space_group

        instead = {
            "structure_id": int(low.info["structure_id"]),
            "origin": low.info["origin"],
            "space_group": _space_group(low),
            "atoms": len(low),
            "formation_mev": round(
                (low.get_potential_energy() / len(low) - best.reference(key)) * 1000, 3
            ),
        }
    iters = sorted({int(rel.iteration[k]) for k in own})
    return {
        "acnn_relaxations": int(len(own)),
        "iterations_with_relaxations": iters,
        "generated": len(hits),
        "generated_in": hits,
        "best_acnn_rank": min((h["acnn_rank"] for h in hits), default=None),
        "labelled": len(lab_hits),
        "labelled_as": lab_hits[:10],
        "lowest_label": instead,
        "stable_structure_id": found_sid,
        "stable_from": _stable_from(store, cls, found_sid),
    }


def _stable_from(store, cls: _Classifier, sid: int | None) -> dict | None:
    """Where the campaign's stable structure of the composition came from: for a final
    oracle relaxation, its start (iteration, and whether it already was the best-known
    structure)."""
    if sid is None:
        return None
    rec = next((r for r in store.oracle_relaxations() if r.structure_id == sid), None)
    if rec is None:
        return {"structure_id": sid, "oracle_relaxed": False}
    start = store.get_atoms([rec.parent_id])[0]
    rel = store.relaxations(method="acnn")
    idx = np.nonzero(rel.structure_id == rec.parent_id)[0]
    return {
        "structure_id": sid,
        "oracle_relaxed": True,
        "stage": rec.stage,
        "start_id": int(rec.parent_id),
        "start_iteration": int(rel.iteration[idx[0]]) if len(idx) else None,
        "start_is_best_known": cls.is_target(start),
        "steps": int(rec.steps),
        "status": rec.status,
    }


# ---------------------------------------------------------------------------- main
def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _provenance() -> dict:
    import alcsp

    src = Path(alcsp.__file__).resolve().parent
    info = {
        "alcsp": alcsp.__version__,
        "alcsp_path": str(src),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "."], capture_output=True, text=True
        ).stdout.strip()
        info["src_modified"] = bool(dirty)
    except (subprocess.CalledProcessError, FileNotFoundError):
        info["commit"] = None  # e.g. a snapshot of src outside a repository
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("system", help="e.g. Cu-Au (benchmarks/data/best-known/<system>.json)")
    ap.add_argument("--seeds", default="1,2,3", help="e.g. 1,2,3 or 1-5")
    ap.add_argument("--rules", default="paper", help="selection rules, e.g. paper,committee")
    ap.add_argument("--config", type=Path, help="campaign config to derive from")
    ap.add_argument("--keep", type=Path, help="campaign directories here (reused if finished)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument(
        "--tol",
        type=float,
        default=1.0,
        help="meV/atom: a found phase further than this from the best-known "
        "energy is diagnosed like a miss",
    )
    ap.add_argument("--no-diagnose", action="store_true")
    ap.add_argument(
        "--best-known",
        type=Path,
        default=BEST_KNOWN,
        help="folder of the best-known hulls (default benchmarks/data/best-known)",
    )
    ap.add_argument("--quiet", action="store_true", help="no campaign log lines")
    args = ap.parse_args()

    best = BestKnown(args.system, args.best_known)
    if args.config is None:
        args.config = (
            ROOT / "examples" / "demo-cuau-emt.toml"
            if args.system == "Cu-Au"
            else ROOT / "benchmarks" / f"discovery-{args.system}.toml"
        )
    if not args.config.is_file():
        sys.exit(f"discovery: config {args.config} does not exist")
    elements = tuple(tomllib.loads(args.config.read_text())["compositions"]["elements"])
    if set(elements) != set(best.elements):
        sys.exit(
            f"discovery: {args.config} is for {elements}, the best-known hull for {best.elements}"
        )
    seeds = _seeds(args.seeds)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    texts = {(s, r): config_for(args.config, s, r) for s in seeds for r in rules}  # all first
    root = args.keep or Path(tempfile.mkdtemp(prefix=f"discovery-{args.system}-"))
    root.mkdir(parents=True, exist_ok=True)
    log(
        f"best-known {args.system}: "
        + ", ".join(f"{k} {best.formation(k) * 1000:.2f}" for k in sorted(best.stable))
        + " meV/atom; "
        f"brute force {best.brute_calls} EMT calls; campaigns in {root}"
    )

    runs = []
    for s in seeds:
        for r in rules:
            d = root / f"{r}-seed{s}"
            log(f"seed {s}, rule {r}: campaign in {d}")
            timing = run_campaign(d, texts[(s, r)], args.config.parent, args.quiet)
            res = evaluate(d, best, args.tol, not args.no_diagnose)
            res.update(seed=s, rule=r, directory=str(d), **timing)
            runs.append(res)
            print(_line(res), flush=True)
            if res["below_best_known_hull_mev"]:
                print(
                    "!" * 78
                    + "\n!!! BEST-KNOWN HULL WRONG: the campaign found "
                    + ", ".join(
                        f"{k} {v:+.2f} meV/atom"
                        for k, v in res["below_best_known_hull_mev"].items()
                    )
                    + " below the best-known hull.\n!!! Re-establish "
                    f"benchmarks/data/best-known/{args.system} (benchmarks/best_known.py)."
                    "\n" + "!" * 78,
                    flush=True,
                )
            for k, dg in (res.get("diagnosis") or {}).items():
                if dg["lost"]:
                    print("    " + _diag_line(k, dg), flush=True)
            if args.json:
                _write(args, best, rules, runs, root)
    print()
    summary = _summary(rules, runs)
    for r, sm in summary.items():
        print(
            f"{r}: exact stable set in {sm['exact']}/{sm['seeds']} seeds; median oracle "
            f"calls {sm['median_calls']} ({sm['median_share']:.2%} of the brute force); "
            f"median max error of found phases {sm['median_max_error_mev']} "
            "meV/atom"
        )
    if any(run["below_best_known_hull_mev"] for run in runs):
        print("!!! at least one campaign went below the best-known hull: see above")
    if args.json:
        _write(args, best, rules, runs, root)
        log(f"wrote {args.json}")
    if args.keep is None:
        log(f"campaigns left in {root} (temporary; --keep DIR to choose)")


def _line(r: dict) -> str:
    exact = "exact stable set" if r["exact_set"] else "NOT exact"
    parts = [f"seed {r['seed']:>3} {r['rule']:<10} {exact:<16}"]
    if r["missed"]:
        out = set(r["outside_composition_space"])
        parts.append(
            "missed "
            + ",".join(k + (" (outside its compositions)" if k in out else "") for k in r["missed"])
        )
    if r["extra"]:
        parts.append("extra " + ",".join(r["extra"]))
    err = r["max_abs_error_mev"]
    parts.append(f"max |dE| found {err:.2f} meV/atom" if err is not None else "max |dE| -")
    share = r["share_of_brute_force"]
    parts.append(
        f"{r['oracle_calls']} oracle calls"
        + (f" ({share:.2%} of brute force)" if share is not None else "")
    )
    rep = r.get("repeated_basins")
    if rep:
        parts.append(f"{rep['repeated']}/{rep['labelled_minima']} labelled minima repeat a basin")
    parts.append(f"{r['iterations']} iterations, wall {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s")
    return " | ".join(parts)


def _diag_line(key: str, d: dict) -> str:
    gen = (
        f"best-known structure generated {d['generated']}x (best ACNN rank {d['best_acnn_rank']})"
        if d["generated"]
        else "best-known structure never "
        f"generated in {d['acnn_relaxations']} ACNN relaxations of {key}"
    )
    lab = (
        f"labelled {d['labelled']}x (lowest of those "
        f"{min(x['formation_mev'] for x in d['labelled_as']):.2f} meV/atom)"
        if d["labelled"]
        else "never labelled"
    )
    low = d["lowest_label"]
    inst = (
        f"; lowest label {low['formation_mev']:.2f} meV/atom ({low['space_group']}, "
        f"{low['atoms']} atoms, {low['origin']})"
        if low
        else "; no label"
    )
    return f"{key}: {gen}; {lab}{inst}"


def _summary(rules: list[str], runs: list[dict]) -> dict:
    out = {}
    for r in rules:
        rr = [x for x in runs if x["rule"] == r]
        if not rr:
            continue
        errs = [x["max_abs_error_mev"] for x in rr if x["max_abs_error_mev"] is not None]
        out[r] = {
            "seeds": len(rr),
            "exact": sum(x["exact_set"] for x in rr),
            "median_calls": statistics.median(x["oracle_calls"] for x in rr),
            "median_share": statistics.median(x["share_of_brute_force"] or 0 for x in rr),
            "median_max_error_mev": round(statistics.median(errs), 3) if errs else None,
            "missed": {
                k: sum(k in x["missed"] for x in rr)
                for k in sorted({k for x in rr for k in x["missed"]})
            },
            "median_wall_s": statistics.median(x["wall_s"] for x in rr),
        }
    return out


def _write(args, best: BestKnown, rules, runs, root: Path) -> None:
    out = {
        "system": args.system,
        "config": str(args.config),
        "best_known": {
            "stable": {k: round(best.formation(k) * 1000, 3) for k in sorted(best.stable)},
            "brute_force_emt_calls": best.brute_calls,
        },
        "rules": rules,
        "runs": runs,
        "summary": _summary(rules, runs),
        "campaigns": str(root),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/discovery.py "
        + " ".join(sys.argv[1:]),
        "provenance": _provenance(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
