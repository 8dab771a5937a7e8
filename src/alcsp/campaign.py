"""The active-learning campaign (paper Fig. 2 and section II.C), one screen per stage.

    iteration 0:  generate N0 random structures ─► label them with the oracle
    iteration n:  train ACNN (warm start) ─► generate + relax random structures with ACNN until
                  B_max unphysical or the budget ─► deduplicate, hull from ACNN enthalpies ─►
                  select C_max × L_max + unconverged/unphysical ─► label ─► validate model n on
                  those labels (Fig. 3) ─► hull from all oracle labels ─► converged?
    finally:      relax the M lowest-E_hull structures with the oracle, final hull

Every stage reads what the store already holds and only adds what is missing, committing
each unit of work as it finishes, and all randomness is drawn from generators seeded by
(seed, iteration, stage). So ``Campaign.open(dir).run()`` after a ``kill -9`` anywhere
continues exactly where it stopped and ends with the same labels and hull as a run that was
never interrupted.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from alcsp import __version__
from alcsp.compositions import composition_key, enumerate_compositions
from alcsp.config import CampaignConfig, parse_config
from alcsp.dedup import Deduplicator, fingerprint
from alcsp.execute import make_executor
from alcsp.generate import StructureGenerator
from alcsp.hull import HullResult, build_hull
from alcsp.label import label_structures
from alcsp.oracle.base import Label
from alcsp.oracle.factory import make_oracle
from alcsp.potential import ACNNPotential, evaluate, load_model, save_model, train
from alcsp.relax.runner import relax_structures
from alcsp.select import Candidate, search_should_stop, select_for_labelling
from alcsp.store import CampaignStore, RelaxationRecord
from alcsp.structures import StructureBatch
from alcsp.units import GPA

Say = Callable[[str], None]


@dataclass
class HullSnapshot:
    """The oracle-level hull after an iteration: stable compositions and their formation
    enthalpies (eV/atom), and the best label of each stable composition."""

    stable: dict[str, float]
    structure_ids: dict[str, int]
    n_entries: int

    def to_json(self) -> dict:
        return {
            "stable": self.stable,
            "structure_ids": self.structure_ids,
            "n_entries": self.n_entries,
        }

    @classmethod
    def from_json(cls, d: dict | None) -> HullSnapshot | None:
        if not d:
            return None
        return cls(
            dict(d["stable"]),
            {k: int(v) for k, v in d["structure_ids"].items()},
            int(d["n_entries"]),
        )

    def same_as(self, other: HullSnapshot | None, tol: float) -> bool:
        if other is None or set(self.stable) != set(other.stable):
            return False
        return all(abs(self.stable[k] - other.stable[k]) <= tol for k in self.stable)


@dataclass
class LabelledHull:
    """The hull of a campaign's oracle labels: ``hull`` entries are ``structures[kept[i]]``."""

    hull: HullResult
    structures: list[Atoms]  # every successful label, with info["structure_id"]
    kept: np.ndarray  # [M] index into structures of each hull entry

    def structure_id(self, entry: int) -> int:
        return int(self.structures[self.kept[entry]].info["structure_id"])


def hull_of(keys: np.ndarray, enthalpy: np.ndarray, elements: tuple[str, ...]):
    """Hull of the entries whose elements all have a pure entry: (HullResult, kept indices),
    or None when no entry qualifies. Entries of compositions with a missing terminal are
    left out (their E_hull is undefined), never guessed."""
    if len(keys) == 0:
        return None
    from pymatgen.core import Composition

    have = {str(Composition(k).elements[0]) for k in set(keys) if len(Composition(k)) == 1}
    keep = np.array([{str(e) for e in Composition(k).elements} <= have for k in keys])
    if not keep.any():
        return None
    idx = np.nonzero(keep)[0]
    present = tuple(e for e in elements if e in have)
    return build_hull(list(keys[idx]), np.asarray(enthalpy)[idx], elements=present), idx


def labelled_hull(
    store: CampaignStore, oracle: str, pressure_gpa: float, elements: tuple[str, ...]
) -> LabelledHull | None:
    """Hull of every successful label of ``oracle``, enthalpies at ``pressure_gpa``."""
    data = store.training_set(oracle)
    if not data:
        return None
    p = pressure_gpa * GPA
    keys = np.array([composition_key(a.get_chemical_formula()) for a in data], dtype=object)
    # E0, the zero-smearing energy (``get_potential_energy()`` of a stored label; training
    # uses the force-consistent free energy instead).
    h = np.array([(a.get_potential_energy() + p * a.get_volume()) / len(a) for a in data])
    built = hull_of(keys, h, elements)
    return None if built is None else LabelledHull(built[0], data, built[1])


class Campaign:
    """One campaign directory: its config, store, oracle and executor."""

    def __init__(self, store: CampaignStore, config: CampaignConfig, say: Say | None = None):
        self.store = store
        self.config = config
        self.say: Say = say or (lambda msg: None)
        self.space = enumerate_compositions(config.compositions)
        if len(self.space) == 0:
            raise ValueError("[compositions] rules allow no composition at all; loosen them")
        self.oracle = make_oracle(config.oracle, store.oracle_dir(config.oracle.name))
        self.generator = StructureGenerator(config.generate)
        self._executor = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, directory: str | Path, config_text: str, say: Say | None = None) -> Campaign:
        config = parse_config(config_text)
        store = CampaignStore.create(directory, config_text, __version__)
        store.add_compositions(
            [e.key for e in enumerate_compositions(config.compositions)],
            iteration=0,
            source="rules",
        )
        return cls(store, config, say)

    @classmethod
    def open(
        cls, directory: str | Path, say: Say | None = None, config_text: str | None = None
    ) -> Campaign:
        """Open an existing campaign; ``config_text`` replaces its config (e.g. a new budget)."""
        store = CampaignStore.open(directory)
        if config_text is not None:
            parse_config(config_text)  # validate before storing
            store.set_meta("config", config_text)
        return cls(store, parse_config(store.config_text, source=f"{directory} config"), say)

    @property
    def executor(self):
        if self._executor is None:
            self._executor = make_executor(self.config.executor)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
        self.store.close()

    # ------------------------------------------------------------------ the loop
    def run(self) -> HullSnapshot | None:
        """Run (or continue) the campaign to convergence or budget; return the final hull."""
        cfg = self.config.campaign
        self.initial_data()
        for n in range(1, cfg.max_iterations + 1):
            if self.converged(n - 1):
                self.say(f"hull unchanged for {cfg.hull_patience} iterations: converged")
                break
            if self.budget_left() == 0:
                self.say("oracle budget spent")
                break
            record = self.store.iteration(n) if n in self._iteration_indices() else None
            if record is not None and record.finished is not None:
                continue
            self.iteration(n)
        return self.final_relaxation()

    def iteration(self, n: int) -> None:
        t0 = time.perf_counter()
        self.store.start_iteration(n, "train")
        model = self.train(n)
        t1 = time.perf_counter()
        self.store.update_iteration(n, stage="search", timings={"train": t1 - t0})
        n_relaxed = self.search(n, model)
        t2 = time.perf_counter()
        self.store.update_iteration(n, stage="select", timings={"search": t2 - t1})
        ids = self.select(n, model)
        self.store.update_iteration(n, stage="label", counts={"selected": len(ids)})
        self.label(ids, n)
        ok, failed = self._label_counts(ids)
        t3 = time.perf_counter()
        errors = self.validate(n, model)
        hull = self.oracle_hull()
        stats = self._relax_stats(n)
        self.store.update_iteration(
            n, stage="done", hull=hull.to_json() if hull else None, finished=True,
            counts={**stats, "relaxed": n_relaxed, "labelled": ok,
                    "label_failures": failed, "validation": errors},
            timings={"select_label": t3 - t2},
        )  # fmt: skip
        stable = ", ".join(sorted(hull.stable)) if hull else "none yet"
        self.say(
            f"iteration {n} done: {stats['relaxations']} relaxed, {ok} "
            f"labelled ({failed} failed); stable: {stable}"
        )

    # ------------------------------------------------------------------ stages
    def initial_data(self) -> None:
        """Iteration 0: N0 random structures across the space, labelled by the oracle."""
        cfg = self.config.campaign
        record = self.store.start_iteration(0, "initial")
        ids = self.store.structure_ids(origin="initial", iteration=0)
        if not ids and cfg.initial_structures:
            structures = self.random_structures(cfg.initial_structures, iteration=0, stage=0)
            ids = self.store.add_structures(structures, origin="initial", iteration=0)
            self.say(f"iteration 0: {len(ids)} random structures to label")
        ids = self._within_budget(ids)
        self.label(ids, 0)
        ok, failed = self._label_counts(ids)
        hull = self.oracle_hull()
        self.store.update_iteration(
            0, stage="done", hull=hull.to_json() if hull else None,
            finished=record.finished is None, counts={"labelled": ok, "label_failures": failed},
        )  # fmt: skip

    def random_structures(
        self, count: int, iteration: int, stage: int, volumes: dict[str, float] | None = None
    ) -> list[Atoms]:
        """``count`` random structures spread evenly over the compositions (round robin),
        each with a random number of formula units; failures are reported, not hidden."""
        rng = np.random.default_rng([self.config.campaign.seed, iteration, stage])
        entries = list(self.space)
        wanted: dict[str, int] = {}
        for k in range(count):
            entry = entries[k % len(entries)]
            cell = entry.cell_compositions()[rng.integers(len(entry.formula_units))]
            key = cell.formula.replace(" ", "")
            wanted[key] = wanted.get(key, 0) + 1
        out: list[Atoms] = []
        failures: dict[str, str] = {}
        for cell, n in wanted.items():
            hint = (volumes or {}).get(composition_key(cell))
            result = self.generator.generate(cell, n, rng, volume_per_atom=hint)
            out.extend(result.structures)
            for f in result.failures:
                failures.setdefault(f.composition, f.reason)
        for comp, reason in sorted(failures.items()):
            self.say(f"could not generate {comp}: {reason}")
        return out

    def train(self, n: int):
        """Model n: trained on every label so far, warm-started from model n-1."""
        for rec in self.store.models():
            if rec.iteration == n:
                return load_model(self.store.model_path(rec))
        data = self.training_data()
        if not data:
            raise RuntimeError(
                "no successful oracle label to train on; check the oracle "
                "failures with `alcsp status`"
            )
        previous = [r for r in self.store.models() if r.iteration == n - 1]
        start = load_model(self.store.model_path(previous[-1])) if previous else self.config.model
        tcfg = replace(self.config.train, seed=self.config.campaign.seed * 1000 + n)
        self.say(
            f"iteration {n}: training ACNN on {len(data)} labels "
            f"({'warm start' if previous else 'fresh'}, {tcfg.steps} steps)"
        )
        model, report = train(data, start, tcfg)
        path = save_model(
            model,
            self.store.models_dir() / f"acnn-{n:03d}.pt",
            metadata={"iteration": n, **report.to_dict()},
        )
        self.store.add_model(path, n, report.to_dict())
        if report.validation:
            self.say(f"iteration {n}: validation {report.validation}")
        return model

    def training_data(self) -> list[Atoms]:
        """Every successful label, ordered by structure id (not by completion order, which
        depends on the executor), without those beyond ``train_max_force``."""
        data = sorted(self.store.training_set(self.oracle.name),
                      key=lambda a: a.info["structure_id"])  # fmt: skip
        kept = self._within_force_cap(data)
        if len(kept) < len(data):
            self.say(f"training leaves out {len(data) - len(kept)} labels with force components "
                     f"above {self.config.campaign.train_max_force} eV/Å (kept in the store)")
        return kept

    def _within_force_cap(self, data: list[Atoms]) -> list[Atoms]:
        cap = self.config.campaign.train_max_force
        if cap == 0:
            return data
        return [a for a in data if float(np.abs(a.get_forces()).max()) <= cap]

    def search(self, n: int, model) -> int:
        """Relax random structures with ACNN, in fixed chunks, until B_max unphysical ones
        have appeared or the iteration's budget is spent. Returns structures relaxed now."""
        cfg = self.config.campaign
        ids = self.store.structure_ids(origin="random", iteration=n)
        if not ids and cfg.structures_per_iteration:
            structures = self.random_structures(
                cfg.structures_per_iteration, n, stage=1, volumes=self._volume_hints()
            )
            ids = self.store.add_structures(structures, origin="random", iteration=n)
        done = self.store.relaxed_initial_ids("acnn")
        b_max = self.config.selection.for_iteration(n).b_max
        potential = ACNNPotential(model, dtype=torch.float64)
        relaxed = 0
        t0 = time.perf_counter()
        for start in range(0, len(ids), cfg.relax_chunk):
            if search_should_stop(self._count_status(n, "unphysical"), b_max):
                self.say(f"iteration {n}: B_max = {b_max} unphysical structures: search ends")
                break
            chunk = [i for i in ids[start : start + cfg.relax_chunk] if i not in done]
            if not chunk:
                continue
            atoms = self.store.get_atoms(chunk)
            results = relax_structures(atoms, potential, cfg.pressure, self.config.relax)
            records = [
                RelaxationRecord(
                    status=r.status,
                    energy=r.energy,
                    enthalpy_per_atom=r.enthalpy,
                    volume=r.volume * len(r.atoms),
                    steps=r.steps,
                    pressure=r.pressure,
                    reason=r.reason,
                    initial_id=sid,
                    fingerprint=self._fingerprint(r.atoms),
                )  # fmt: skip
                for sid, r in zip(chunk, results, strict=True)
            ]
            self.store.add_relaxed([r.atoms for r in results], records, iteration=n)
            relaxed += len(chunk)
            rate = relaxed / max(time.perf_counter() - t0, 1e-9)
            self.say(
                f"iteration {n}: relaxed {start + len(chunk)}/{len(ids)} ({rate:.1f} structures/s)"
            )
        return relaxed

    def select(self, n: int, model=None) -> list[int]:
        """Hull from this iteration's ACNN enthalpies, then the composition-wise selection.

        An element with no converged relaxation in this iteration (its random cells all went
        unphysical, say) would leave every composition containing it off the hull; with
        ``model`` given, earlier structures of that element stand in (``terminal_references``).
        """
        rel = self.store.relaxations(iteration=n, method="acnn")
        if len(rel["id"]) == 0:
            return []
        keys = np.array([composition_key(c) for c in rel["composition"]], dtype=object)
        e_hull = np.full(len(keys), np.nan)
        conv = rel["status"] == "converged"
        ref_keys, ref_h = self.terminal_references(n, set(keys[conv]), model)
        n_conv = int(conv.sum())
        hull = self._hull(
            np.concatenate([keys[conv], ref_keys]),
            np.concatenate([rel["enthalpy_per_atom"][conv], ref_h]),
        )
        if hull is not None:
            own = hull[1] < n_conv  # this iteration's entries; the references come after
            idx, values = hull[1][own], hull[0].e_hull[own]
            e_hull[np.nonzero(conv)[0][idx]] = values
            self.store.set_e_hull(rel["id"][conv][idx].tolist(), values.tolist())
        fps = self.store.fingerprints(rel["id"].tolist())
        candidates = []
        for k in range(len(keys)):
            status = str(rel["status"][k])
            if status == "converged" and not math.isfinite(e_hull[k]):
                continue  # a composition the ACNN hull could not place (missing terminal)
            candidates.append(Candidate(
                id=str(rel["structure_id"][k]), composition=str(keys[k]),
                enthalpy_per_atom=float(rel["enthalpy_per_atom"][k]), e_hull=float(e_hull[k]),
                status=status, fingerprint=fps.get(int(rel["id"][k])),
            ))  # fmt: skip
        labelled = self._labelled_before(n)
        known = Deduplicator(self.config.dedup)
        all_rel = self.store.relaxations(method="acnn")
        all_fps = self.store.fingerprints(all_rel["id"].tolist())
        for k, sid in enumerate(all_rel["structure_id"]):
            fp = all_fps.get(int(all_rel["id"][k]))
            if int(sid) in labelled and fp is not None:
                known.add(
                    str(sid),
                    composition_key(all_rel["composition"][k]),
                    float(all_rel["enthalpy_per_atom"][k]),
                    fp,
                )
        selection = select_for_labelling(
            candidates, self.config.selection.for_iteration(n),
            labelled_ids=[str(i) for i in labelled], labelled=known, dedup=self.config.dedup,
        )  # fmt: skip
        ids = self._within_budget([int(i) for i in selection.ids])
        self.say(
            f"iteration {n}: selected {len(selection.minima)} minima from "
            f"{len(selection.compositions)} compositions + {len(selection.failures)} "
            f"unconverged/unphysical; labelling {len(ids)}"
        )
        return ids

    def label(self, ids: list[int], n: int):
        def progress(sid, result):
            nonlocal done
            done += 1
            if done % 10 == 0 or done == len(ids):
                self.say(f"iteration {n}: oracle jobs {done}/{len(ids)}")

        done = 0
        return label_structures(
            self.store, self.oracle, ids, self.executor, iteration=n, on_result=progress
        )

    def validate(self, n: int, model) -> dict:
        """Errors of model n on the labels of iteration n (the paper's Fig. 3), over the labels
        it could have been trained on (force components within ``train_max_force``)."""
        labels = self.store.training_set(self.oracle.name)
        new = self._within_force_cap([a for a in labels if a.info["iteration"] == n])
        if not new:
            return {}
        m = evaluate(model, new)
        self.say(f"iteration {n}: model {n} on its {len(new)} new labels: {m}")
        return {
            "energy_mev_per_atom": m.energy_mev_per_atom,
            "force_mev_per_a": m.force_mev_per_a,
            "stress_gpa": m.stress_gpa,
            "n_structures": m.n_structures,
        }

    def oracle_hull(self) -> HullSnapshot | None:
        """Hull of every successful oracle label (enthalpies at the campaign pressure)."""
        lh = self._labelled_hull()
        if lh is None:
            return None
        stable, sids = {}, {}
        for i in lh.hull.stable_indices:
            key = lh.hull.keys[lh.hull.comp_index[i]]
            stable[key] = float(lh.hull.formation[i])
            sids[key] = lh.structure_id(i)
        return HullSnapshot(stable, sids, len(lh.structures))

    def final_relaxation(self) -> HullSnapshot | None:
        """Relax the M lowest-E_hull labelled structures with the oracle; the final hull."""
        from alcsp.oracle_relax import relax_with_oracle

        m = self.config.final.structures
        if m == 0:
            return self.oracle_hull()
        done = self.store.structure_ids(origin="oracle_relaxed")
        if done:
            # A kill between storing the relaxed structures and their labels: the label a
            # relaxation would have stored is a single point of its final geometry.
            missing = sorted(set(done) - self.store.labelled_ids(self.oracle.name))
            if missing:
                self.label(missing, -1)
        else:
            picks = self._lowest_e_hull_labels(m)
            if picks:
                self.say(f"final: relaxing {len(picks)} structures with {self.oracle.name}")
                final = relax_with_oracle(
                    self.oracle,
                    self.store.get_atoms(picks),
                    self.config.campaign.pressure,
                    self.config.final.fmax,
                    self.config.final.max_steps,
                    self.executor,
                )
                ok = [(sid, r) for sid, r in zip(picks, final, strict=True) if r is not None]
                if len(ok) < len(picks):
                    self.say(f"final: {len(picks) - len(ok)} oracle relaxations failed (their "
                             f"logs are under {self.oracle.workdir / 'final-relax'})")
                new_ids = self.store.add_structures(
                    [r.atoms for _, r in ok],
                    origin="oracle_relaxed",
                    iteration=-1,
                    parent_ids=[sid for sid, _ in ok],
                )
                self.store.add_labels(
                    [(sid, Label(r.energy, r.forces, r.stress, self.oracle.name, r.wall_time))
                     for sid, (_, r) in zip(new_ids, ok, strict=True)], iteration=-1,
                )  # fmt: skip
        hull = self.oracle_hull()
        if hull is not None:
            self.store.set_meta("final_hull", json.dumps(hull.to_json()))
            self.say(
                "final hull: "
                + ", ".join(
                    f"{k} ({v * 1000:.1f} meV/atom)" for k, v in sorted(hull.stable.items())
                )
            )
        return hull

    # ------------------------------------------------------------------ helpers
    def converged(self, n: int) -> bool:
        """True when the oracle hull after iterations n-K+1..n equals the one before each."""
        k = self.config.campaign.hull_patience
        if n < k:
            return False
        snaps = []
        for i in range(n - k, n + 1):
            if i not in self._iteration_indices():
                return False
            rec = self.store.iteration(i)
            if rec.finished is None:
                return False
            snaps.append(HullSnapshot.from_json(rec.hull))
        tol = self.config.campaign.hull_tolerance
        pairs = zip(snaps, snaps[1:], strict=False)
        return all(s is not None and s.same_as(p, tol) for p, s in pairs)

    def budget_left(self) -> int | None:
        b = self.config.campaign.oracle_budget
        return None if b == 0 else max(0, b - self.store.count("labels"))

    def _within_budget(self, ids: list[int]) -> list[int]:
        left = self.budget_left()
        if left is None:
            return ids
        labelled = self.store.labelled_ids(self.oracle.name)
        todo = [i for i in ids if i not in labelled]
        return [i for i in ids if i in labelled] + todo[:left]

    def _label_counts(self, ids: list[int]) -> tuple[int, int]:
        """(successful, failed) oracle outcomes stored for ``ids``."""
        got = self.store.get_labels(ids, self.oracle.name)
        ok = sum(1 for r in got.values() if r.ok)
        return ok, len(got) - ok

    def _labelled_before(self, n: int) -> set[int]:
        """Structures with an outcome from this oracle recorded before iteration ``n`` (or
        by the final relaxation). Iteration n's selection excludes these and only these, so
        a selection redone after a restart that had labelled part of it is the same one."""
        q = "SELECT structure_id FROM labels WHERE oracle = ? AND iteration < ?"
        return {r[0] for r in self.store.conn.execute(q, (self.oracle.name, n))}

    def terminal_references(
        self, n: int, present: set[str], model
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hull entries (keys, enthalpies eV/atom) for the elements with no converged ACNN
        relaxation among ``present`` in iteration ``n``: the lowest-enthalpy converged ACNN
        relaxations of that element from earlier iterations (up to 3) and its labelled
        structures, evaluated with ``model`` at their geometry; the lowest per element. A
        single point, not a relaxation: an upper bound of the model's own terminal enthalpy.
        """
        missing = [e for e in self.config.elements if e not in present]
        if not missing or model is None:
            return np.array([], dtype=object), np.array([], dtype=float)
        rel = self.store.relaxations(status="converged", method="acnn")
        ids: list[int] = []
        for el in missing:
            own = [k for k in range(len(rel["id"]))
                   if rel["iteration"][k] < n and composition_key(rel["composition"][k]) == el]
            own.sort(key=lambda k: rel["enthalpy_per_atom"][k])
            ids += [int(rel["structure_id"][k]) for k in own[:3]]
        atoms = self.store.get_atoms(ids) + [
            a for a in self._within_force_cap(self.store.training_set(self.oracle.name))
            if composition_key(a.get_chemical_formula()) in missing
        ]  # fmt: skip
        best: dict[str, float] = {}
        if atoms:
            batch = StructureBatch.from_atoms(atoms, dtype=torch.float64)
            energy = ACNNPotential(model, dtype=torch.float64).compute(batch).energy.numpy()
            p = self.config.campaign.pressure * GPA
            for a, e in zip(atoms, energy, strict=True):
                h = (float(e) + p * a.get_volume()) / len(a)
                key = composition_key(a.get_chemical_formula())
                if math.isfinite(h) and h < best.get(key, math.inf):
                    best[key] = h
        for el in missing:
            self.say(f"iteration {n}: no converged {el} relaxation in this iteration; "
                     + (f"hull reference {best[el]:.4f} eV/atom from earlier {el} structures"
                        if el in best else f"none earlier either: compositions with {el} "
                        "are left out of this iteration's ACNN hull"))  # fmt: skip
        keys = sorted(best)
        return np.array(keys, dtype=object), np.array([best[k] for k in keys], dtype=float)

    def _iteration_indices(self) -> set[int]:
        return {it.index for it in self.store.iterations()}

    def _hull(self, keys: np.ndarray, enthalpy: np.ndarray):
        return hull_of(keys, enthalpy, self.config.elements)

    def _labelled_hull(self) -> LabelledHull | None:
        return labelled_hull(
            self.store, self.oracle.name, self.config.campaign.pressure, self.config.elements
        )

    def _fingerprint(self, atoms: Atoms) -> np.ndarray | None:
        """Fingerprint of a relaxed structure; None for a geometry too broken to describe
        (non-finite positions or a degenerate cell, which only unphysical outcomes have)."""
        if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell.array))):
            return None
        if abs(atoms.get_volume()) < 1e-3 * len(atoms):
            return None
        return fingerprint(atoms, self.config.dedup.fingerprint)

    def _relax_stats(self, n: int) -> dict:
        rel = self.store.relaxations(iteration=n, method="acnn")
        status = rel["status"]
        return {
            "relaxations": int(len(status)),
            "converged": int((status == "converged").sum()),
            "max_steps": int((status == "max_steps").sum()),
            "unphysical": int((status == "unphysical").sum()),
        }

    def _count_status(self, n: int, status: str) -> int:
        return int((self.store.relaxations(iteration=n, method="acnn")["status"] == status).sum())

    def _volume_hints(self) -> dict[str, float]:
        """Mean volume per atom of the converged relaxations so far, per composition."""
        comps, vols = self.store.relaxed_volumes_per_atom(method="acnn", status="converged")
        sums: dict[str, list[float]] = {}
        for comp, v in zip(comps, vols, strict=True):
            sums.setdefault(composition_key(comp), []).append(float(v))
        return {k: float(np.mean(v)) for k, v in sums.items()}

    def _lowest_e_hull_labels(self, m: int) -> list[int]:
        """The M labelled structures lowest in E_hull (ties by id), as the paper relaxes its
        1,000 most stable configurations: several candidates of a near-hull composition, not
        only its best, since an ML-relaxed label may sit in the basin of a worse minimum."""
        lh = self._labelled_hull()
        if lh is None:
            return []
        sids = np.array([lh.structure_id(i) for i in range(len(lh.kept))])  # [M]
        order = np.lexsort((sids, lh.hull.e_hull))[:m]
        return [int(sids[i]) for i in order]
