"""The active-learning campaign (paper Fig. 2 and section II.C), one screen per stage.

    iteration 0:  the [references] phases and N0 random structures ─► label them with the
                  oracle ─► relax the references with the oracle
    iteration n:  train ACNN (warm start) ─► generate + relax random structures with ACNN until
                  B_max unphysical or the budget ─► deduplicate, hull from ACNN enthalpies ─►
                  select C_max × L_max + unconverged/unphysical ─► label ─► validate model n on
                  those labels (Fig. 3) ─► hull from all oracle labels ─► converged?
    finally:      relax with the oracle every terminal and the lowest distinct structures of
                  the near-hull compositions (round robin), final hull

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import overload

import numpy as np
import torch
from ase import Atoms

from alcsp import __version__
from alcsp.campaign.events import (
    CampaignStopped,
    Event,
    EventSink,
    IterationFinished,
    Notice,
    StageProgress,
    StageStarted,
    describe,
)
from alcsp.campaign.final import final_choice
from alcsp.committee import Committee, TrainJob, first_crossing, member_job, train_models
from alcsp.compositions import enumerate_compositions
from alcsp.config import CampaignConfig, parse_config
from alcsp.dedup import Deduplicator
from alcsp.execute import TaskResult, make_executor
from alcsp.generate import StructureGenerator
from alcsp.label import LabelSummary, label_structures
from alcsp.oracle.base import LabelResult
from alcsp.oracle.factory import make_oracle
from alcsp.potential import ACNNPotential, evaluate, load_model, save_model, train
from alcsp.potential.model import ACNN
from alcsp.potential.train import TrainReport, hull_weights
from alcsp.references import Reference, load_references
from alcsp.relax.config import RelaxConfig
from alcsp.relax.runner import RelaxResult
from alcsp.search import GenerateSpec, ShardJob, ShardResult, relax_shard, relaxed_fingerprint
from alcsp.select import Candidate, cap_selection, search_should_stop, select_for_labelling
from alcsp.store import CampaignStore, RelaxationRecord
from alcsp.store.hulls import (
    HullSnapshot,
    LabelledHull,
    hull_of,
    labelled_hull,
    labels_e_hull,
    reference_names,
    terminal_warnings,
)
from alcsp.structures import StructureBatch
from alcsp.units import GPA
from alcsp.vocab import OracleRelaxStatus, OracleStage, Origin, RelaxStatus, Stage, composition_key

Say = Callable[[str], None]


def _load_references(config: CampaignConfig, base_dir: Path) -> list[Reference]:
    """The config's reference phases, built and read; a clear error before anything is
    written when a file is missing, unreadable, off the campaign's elements or repeated."""
    from alcsp.generate import start_volume_per_atom

    if config.references.is_empty:
        return []
    return load_references(
        config.references,
        config.elements,
        base_dir,
        {el: start_volume_per_atom(el, config.generate)[0] for el in config.elements},
    )


class Campaign:
    """One campaign directory: its config, store, oracle and executor."""

    def __init__(
        self,
        store: CampaignStore,
        config: CampaignConfig,
        say: Say | None = None,
        events: EventSink | None = None,
    ):
        self.store = store
        self.config = config
        self._say = say
        self._events = events
        self.space = enumerate_compositions(config.compositions)
        if len(self.space) == 0:
            raise ValueError("[compositions] rules allow no composition at all; loosen them")
        self.oracle = make_oracle(config.oracle, store.oracle_dir(config.oracle.name))
        self.generator = StructureGenerator(config.generate)
        self._executor = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        directory: str | Path,
        config_text: str,
        say: Say | None = None,
        base_dir: str | Path = ".",
        events: EventSink | None = None,
    ) -> Campaign:
        """A new campaign in ``directory``; ``[references]`` files are read relative to
        ``base_dir`` (the config file's folder) and stored, before anything is written.

        Atomic (``CampaignStore.create``): the compositions and references are stored in a
        temporary folder renamed into place at the end, so a kill leaves no campaign or a
        whole one, and an error (e.g. a config allowing no composition) leaves nothing."""
        config = parse_config(config_text)
        references = _load_references(config, Path(base_dir))

        def populate(store: CampaignStore) -> None:
            store.add_compositions(
                [e.key for e in enumerate_compositions(config.compositions)],
                iteration=0,
                source="rules",
            )
            # A campaign on the temporary store only to add the references; its oracle's
            # folder (in the temporary folder) is never used.
            cls(store, config, say, events)._add_references(references)

        store = CampaignStore.create(directory, config_text, __version__, populate=populate)
        try:
            return cls(store, config, say, events)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(
        cls,
        directory: str | Path,
        say: Say | None = None,
        config_text: str | None = None,
        base_dir: str | Path = ".",
        events: EventSink | None = None,
    ) -> Campaign:
        """Open an existing campaign; ``config_text`` replaces its config (e.g. a new budget,
        more references: those not yet in the store are added)."""
        store = CampaignStore.open(directory)
        references = None
        if config_text is not None:
            try:
                references = _load_references(parse_config(config_text), Path(base_dir))
            except BaseException:
                store.close()
                raise
            store.set_meta("config", config_text)
        try:
            campaign = cls(
                store, parse_config(store.config_text, source=f"{directory} config"), say, events
            )
            if references is not None:
                campaign._add_references(references)
        except BaseException:
            store.close()
            raise
        return campaign

    def _add_references(self, references: list[Reference]) -> None:
        """Store the reference phases not stored yet (by name), as iteration 0 structures."""
        names = self.reference_names()
        new = [r for r in references if r.name not in names.values()]
        if not new:
            return
        ids = self.store.add_structures(
            [r.atoms for r in new], origin=Origin.REFERENCE_PHASE, iteration=0
        )
        names.update({sid: r.name for sid, r in zip(ids, new, strict=True)})
        self.store.set_meta("references", json.dumps({str(k): v for k, v in names.items()}))
        self._notice(f"references: {', '.join(r.name for r in new)}")

    # ------------------------------------------------------------------ telling the user
    def emit(self, event: Event) -> None:
        """Hand ``event`` to the subscriber; a ``say`` callback gets its log line."""
        if self._events is not None:
            self._events(event)
        if self._say is not None:
            line = describe(event)
            if line is not None:
                self._say(line)

    def _notice(self, text: str, iteration: int | None = None, warning: bool = False) -> None:
        self.emit(Notice(text, iteration, warning))

    def reference_names(self) -> dict[int, str]:
        return reference_names(self.store)

    @property
    def executor(self):
        if self._executor is None:
            self._executor = make_executor(self.config.executor)
        return self._executor

    def close(self) -> None:
        try:
            if self._executor is not None:
                self._executor.close()
        finally:
            self.store.close()

    # ------------------------------------------------------------------ the loop
    def run(self) -> HullSnapshot | None:
        """Run (or continue) the campaign to convergence or budget; return the final hull."""
        cfg = self.config.campaign
        self.initial_data()
        reason = f"max_iterations = {cfg.max_iterations} reached"
        for n in range(1, cfg.max_iterations + 1):
            why = self.stop_reason(n - 1)
            if why is not None:
                reason = f"converged: {why}"
                break
            if self.budget_left() == 0:
                reason = "oracle budget spent"
                break
            record = self.store.iteration(n) if n in self._iteration_indices() else None
            if record is not None and record.finished is not None:
                continue
            self.iteration(n)
        else:
            why = self.stop_reason(cfg.max_iterations)
            if why is not None:
                reason = f"converged: {why}"
        self.emit(CampaignStopped(reason))
        self.store.set_meta("stop_reason", reason)
        return self.final_relaxation()

    def iteration(self, n: int) -> None:
        t0 = time.perf_counter()
        self.store.start_iteration(n, Stage.TRAIN)
        model = self.train(n)
        committee = self.committee(n, model)
        t1 = time.perf_counter()
        self.store.update_iteration(n, stage=Stage.SEARCH, timings={"train": t1 - t0})
        n_relaxed = self.search(n, model, committee)
        t2 = time.perf_counter()
        self.store.update_iteration(n, stage=Stage.SELECT, timings={"search": t2 - t1})
        ids = self.select(n, model, committee)
        self.store.update_iteration(n, stage=Stage.LABEL, counts={"selected": len(ids)})
        self.label(ids, n)
        ok, failed = self._label_counts(ids)
        t3 = time.perf_counter()
        errors = self.validate(n, model)
        hull = self.oracle_hull()
        stats = self._relax_stats(n)
        self.store.update_iteration(
            n,
            stage=Stage.DONE,
            hull=hull.to_json() if hull else None,
            finished=True,
            counts={
                **stats,
                "relaxed": n_relaxed,
                "labelled": ok,
                "label_failures": failed,
                "validation": errors,
            },
            timings={"select_label": t3 - t2},
        )
        self.emit(
            IterationFinished(
                n,
                self.config.campaign.max_iterations,
                stats["relaxations"],
                ok,
                failed,
                tuple(sorted(hull.stable)) if hull else (),
            )
        )

    # ------------------------------------------------------------------ stages
    def initial_data(self) -> None:
        """Iteration 0: N0 random structures across the space, labelled by the oracle."""
        cfg = self.config.campaign
        record = self.store.start_iteration(0, Stage.INITIAL)
        ids = self.store.structure_ids(origin=Origin.INITIAL, iteration=0)
        if not ids and cfg.initial_structures:
            structures = self.random_structures(cfg.initial_structures, iteration=0, stage=0)
            ids = self.store.add_structures(structures, origin=Origin.INITIAL, iteration=0)
            self._notice(f"iteration 0: {len(ids)} random structures to label")
        refs = self.store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=0)
        ids = self._within_budget(refs + ids)  # references first
        self.label(ids, 0)
        self.relax_references()
        if record.finished is not None:
            return  # a finished stage is never recomputed: its stored hull is history
        ok, failed = self._label_counts(ids)
        hull = self.oracle_hull()
        self.store.update_iteration(
            0,
            stage=Stage.DONE,
            hull=hull.to_json() if hull else None,
            finished=True,
            counts={"labelled": ok, "label_failures": failed},
        )

    def relax_references(self) -> None:
        """Relax every successfully labelled reference phase with the oracle (once; a kill
        resumes each from its checkpoint). The relaxed phases are labels like any other:
        on every hull and in the training set."""
        refs = self.store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=0)
        done = {r.parent_id for r in self.store.oracle_relaxations(OracleStage.REFERENCES)}
        ok = self.store.labelled_ids(self.oracle.name, include_failures=False)
        todo = [i for i in refs if i in ok and i not in done]
        if todo:
            self._oracle_relax(todo, OracleStage.REFERENCES, 0)

    def _oracle_relax(self, ids: list[int], stage: str, round_: int) -> None:
        """Relax ``ids`` with the oracle within the budget left; store each outcome."""
        from alcsp.oracle_relax import OracleRelaxFailure, relax_with_oracle

        fin = self.config.final
        left = self.budget_left()
        steps = fin.max_steps
        if left is not None:
            if left <= 0:
                self._notice(f"{stage}: oracle budget spent; {len(ids)} relaxations not run")
                return
            # each step is one oracle call, plus the first evaluation
            steps = max(1, min(steps, left // len(ids) - 1))
        names = self.reference_names()
        self._notice(
            f"{stage}: relaxing {len(ids)} structures with {self.oracle.name} "
            f"(at most {steps} steps each)"
        )
        self.emit(StageStarted(round_, stage, len(ids), "oracle relaxations"))
        results = relax_with_oracle(
            self.oracle,
            self.store.get_atoms(ids),
            [f"{stage}-s{i}" for i in ids],
            self.config.campaign.pressure,
            fin.fmax,
            steps,
            self.executor,
            max_time_s=fin.max_time_s or None,
        )
        for sid, r in zip(ids, results, strict=True):
            what = names.get(sid, f"structure {sid}")
            if isinstance(r, OracleRelaxFailure):
                self.store.add_oracle_relaxation(
                    sid, stage, round_, OracleRelaxStatus.FAILED, 0, r.calls, r.wall_time, r.reason
                )
                self._notice(f"{stage}: relaxing {what} failed: {r.reason}")
                continue
            self.store.add_oracle_relaxation(
                sid,
                stage,
                round_,
                str(r.status),
                r.steps,
                r.calls,
                r.wall_time,
                relaxed=r.atoms,
                label=r.label(self.oracle.name),
            )
            if r.status != OracleRelaxStatus.CONVERGED:
                self._notice(
                    f"{stage}: {what} stopped at its {r.status} after {r.steps} steps "
                    "(stored and marked)"
                )

    def _cells(self, count: int, rng: np.random.Generator) -> list[str]:
        """The cell composition (e.g. ``"Cu2Au2"``) of each of ``count`` random structures:
        round robin over the compositions, each with a random number of formula units."""
        entries = list(self.space)
        out = []
        for k in range(count):
            entry = entries[k % len(entries)]
            cell = entry.cell_compositions()[rng.integers(len(entry.formula_units))]
            out.append(cell.formula.replace(" ", ""))
        return out

    def random_plan(self, count: int, iteration: int, stage: int) -> list[str]:
        """The cell compositions of an iteration's ``count`` random structures (the search's
        shards cut this list; their workers build the structures)."""
        return self._cells(
            count, np.random.default_rng([self.config.campaign.seed, iteration, stage])
        )

    def random_structures(
        self, count: int, iteration: int, stage: int, volumes: dict[str, float] | None = None
    ) -> list[Atoms]:
        """``count`` random structures spread evenly over the compositions (round robin),
        each with a random number of formula units; failures are reported, not hidden."""
        rng = np.random.default_rng([self.config.campaign.seed, iteration, stage])
        wanted: dict[str, int] = {}
        for key in self._cells(count, rng):
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
            self._notice(f"could not generate {comp}: {reason}")
        return out

    def train(self, n: int) -> ACNN:
        """Model n: trained on every label so far, warm-started from model n-1, in a
        worker process (in the driver with the inline executor). When the iteration's
        selection uses a committee, model n trains beside the members that are still
        missing (``committee``), one thread each, so no core waits for it; alone, it takes
        the driver's torch threads, and gives the model the driver would have trained."""
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
        how = "warm start" if previous else "fresh"
        if self.config.selection.for_iteration(n).uses_committee:
            model, report = self._train_with_members(n, data, TrainJob(start, tcfg), how)
        else:
            self._notice(
                f"iteration {n}: training ACNN on {len(data)} labels ({how}, {tcfg.steps} steps)"
            )
            self.emit(StageStarted(n, Stage.TRAIN, tcfg.steps, "steps"))

            weights = self.weights(data)
            if self.config.executor.kind == "inline":  # everything in the driver

                def progress(step: int, steps: int, loss: float, val: object) -> None:
                    self.emit(StageProgress(n, Stage.TRAIN, step, steps, unit="steps"))

                model, report = train(data, start, tcfg, progress=progress, weights=weights)
            else:  # in a worker with the driver's threads: the same model, driver free

                def progress_all(done: int, total: int) -> None:
                    self.emit(StageProgress(n, Stage.TRAIN, done, total, unit="steps"))

                ((model, report),) = train_models(
                    data,
                    [TrainJob(start, tcfg)],
                    1,
                    weights=weights,
                    progress=progress_all,
                    threads=torch.get_num_threads(),
                )
        path = save_model(
            model,
            self.store.models_dir() / f"acnn-{n:03d}.pt",
            metadata={"iteration": n, **report.to_dict()},
        )
        self.store.add_model(path, n, report.to_dict())
        if report.validation:
            self._notice(f"iteration {n}: validation {report.validation}")
        return model

    def _train_with_members(
        self, n: int, data: list[Atoms], main: TrainJob, how: str
    ) -> tuple[ACNN, TrainReport]:
        """Model n and the committee members of iteration n not on disk yet, one worker
        process each (``[committee] workers`` at a time): ``committee`` then finds every
        member. Members are written before model n is stored, so a kill in between
        retrains model n only."""
        cc = self.config.committee
        todo = [k for k in range(1, cc.size) if not self._member_path(n, k).is_file()]
        jobs = [main] + [self._member_job(n, k) for k in todo]
        steps = sum(j.train.steps for j in jobs)
        self._notice(
            f"iteration {n}: training ACNN ({how}) and {len(todo)} more committee members "
            f"on {len(data)} labels ({steps} steps in all, {cc.n_workers()} processes)"
        )
        self.emit(StageStarted(n, Stage.TRAIN, steps, "steps"))

        def progress(done: int, total: int) -> None:
            self.emit(StageProgress(n, Stage.TRAIN, done, total, unit="steps"))

        trained = train_models(
            data, jobs, cc.n_workers(), weights=self.weights(data), progress=progress
        )
        for k, (member, report) in zip(todo, trained[1:], strict=True):
            self._save_member(n, k, member, report)
        return trained[0]

    def _member_job(self, n: int, k: int) -> TrainJob:
        """Member k of iteration n: warm-started from its own member of iteration n-1
        (fresh from its own seed in the first iteration)."""
        prev = self._member_path(n - 1, k)
        start = load_model(prev) if prev.is_file() else self.config.model
        tcfg = self.config.committee.train_config(self.config.train)
        return member_job(start, tcfg, self.config.campaign.seed * 1000 + n + 100_003 * k)

    def _save_member(self, n: int, k: int, member: ACNN, report: TrainReport) -> None:
        save_model(
            member,
            self._member_path(n, k),
            metadata={"iteration": n, "member": k, **report.to_dict()},
        )

    def committee(self, n: int, model: ACNN) -> Committee | None:
        """Iteration n's committee when its selection uses one: model n (member 0) and
        ``[committee] size - 1`` more, trained on the same labels in parallel processes
        (``_member_job``), so the members stay independent across iterations. Members are
        files ``models/committee/acnn-<n>-m<k>.pt``, written atomically: a resumed campaign
        reuses every finished one. ``train`` trains them with model n; any still missing
        here (model n was stored by a run that died before its members) are trained now."""
        if not self.config.selection.for_iteration(n).uses_committee:
            return None
        cc = self.config.committee
        todo = [k for k in range(1, cc.size) if not self._member_path(n, k).is_file()]
        if todo:
            data = self.training_data()
            self._notice(
                f"iteration {n}: training {len(todo)} more committee members on "
                f"{len(data)} labels ({cc.n_workers()} processes)"
            )
            jobs = [self._member_job(n, k) for k in todo]
            trained = train_models(data, jobs, cc.n_workers(), weights=self.weights(data))
            for k, (member, report) in zip(todo, trained, strict=True):
                self._save_member(n, k, member, report)
        members = [model] + [load_model(self._member_path(n, k)) for k in range(1, cc.size)]
        return Committee(members)

    def _member_path(self, n: int, k: int) -> Path:
        return self.store.models_dir() / "committee" / f"acnn-{n:03d}-m{k}.pt"

    def _stored_committee(self, n: int) -> Committee | None:
        """Iteration n's committee from its files; None without one (or not all there)."""
        if n < 1 or not self.config.selection.for_iteration(n).uses_committee:
            return None
        main = [r for r in self.store.models() if r.iteration == n]
        paths = [self._member_path(n, k) for k in range(1, self.config.committee.size)]
        if not main or not all(p.is_file() for p in paths):
            return None
        return Committee(
            [load_model(self.store.model_path(main[-1]))] + [load_model(p) for p in paths]
        )

    def training_data(self) -> list[Atoms]:
        """Every successful label, ordered by structure id (not by completion order, which
        depends on the executor), without those beyond ``train_max_force``."""
        data = sorted(
            self.store.training_set(self.oracle.name), key=lambda a: a.info["structure_id"]
        )
        kept = self._within_force_cap(data)
        if len(kept) < len(data):
            self._notice(
                f"training leaves out {len(data) - len(kept)} labels with force components "
                f"above {self.config.campaign.train_max_force} eV/Å (kept in the store)"
            )
        cap = self.config.train.max_e_hull
        if cap > 0 and kept:
            e_hull = labels_e_hull(kept, self.config.campaign.pressure, self.config.elements)
            near = [a for a, e in zip(kept, e_hull, strict=True) if not e > cap]  # NaN: kept
            if len(near) < len(kept):
                self._notice(
                    f"training leaves out {len(kept) - len(near)} labels more than {cap} "
                    "eV/atom above the hull of the labels ([train] max_e_hull; kept in the store)"
                )
            kept = near
        return kept

    def weights(self, data: list[Atoms]) -> np.ndarray | None:
        """Loss weights of the training labels from their distance above the hull of these
        labels (``[train] hull_weight_scale``; None when it is 0, the paper's equal weights).
        Enthalpies as every hull of the campaign: E0 + PV per atom at its pressure."""
        tc = self.config.train
        if tc.hull_weight_scale == 0:
            return None
        e_hull = labels_e_hull(data, self.config.campaign.pressure, self.config.elements)
        return hull_weights(e_hull, tc.hull_weight_scale, tc.hull_weight_floor)

    def _within_force_cap(self, data: list[Atoms]) -> list[Atoms]:
        cap = self.config.campaign.train_max_force
        if cap == 0:
            return data
        return [a for a in data if float(np.abs(a.get_forces()).max()) <= cap]

    def search(self, n: int, model: ACNN, committee: Committee | None = None) -> int:
        """Relax random structures with ACNN, in fixed chunks, until B_max unphysical ones
        have appeared or the iteration's budget is spent. Returns structures relaxed now.

        Each chunk is a shard (``alcsp.search``) run by the campaign's executor — inline, its
        process pool or a Dask cluster — so the search uses every worker the oracle jobs do.
        The random structures are built by the worker that relaxes them (``GenerateSpec``:
        the shard's cell compositions, drawn here, and a seed of campaign seed, iteration
        and shard), and stored with their relaxations in one transaction when the shard
        returns; a kill redoes only the shards not stored. The reference phases and the
        decorations, stored before the search, go in shards of their own before and after
        the random ones. Shards are stored in order and B_max is checked between them, as
        one process would: what is stored does not depend on the number of workers or their
        speed.

        With a committee, every relaxation keeps trajectory frames (every
        ``[relax] frame_interval`` steps, 5 when unset) and each one that does not converge
        gets a ``trust_frame``: its first frame where the committee's force deviation
        exceeds ``[[selection]] force_deviation``, labelled instead of the collapsed end."""
        cfg = self.config.campaign
        b_max = self.config.selection.for_iteration(n).b_max
        relax_cfg = self.config.relax
        if committee is not None and relax_cfg.frame_interval == 0:
            relax_cfg = replace(relax_cfg, frame_interval=5)
        shards = self._search_plan(n)
        if not shards:
            return 0
        if search_should_stop(self._count_status(n, RelaxStatus.UNPHYSICAL), b_max):
            self._notice(f"iteration {n}: B_max = {b_max} unphysical structures: search ends")
            return 0
        path = str(self._model_path(n))
        jobs = _ShardJobs(self.store, shards, path, cfg.pressure, relax_cfg, self.config)
        relaxed, left = 0, sum(s.size for s in shards)
        self.emit(StageStarted(n, Stage.SEARCH, left, "structures"))
        t0 = time.perf_counter()
        ready: dict[int, TaskResult[ShardResult]] = {}
        failed = self.store.shard_failures(n)
        failures: dict[str, str] = {}
        k = 0  # the next shard to store
        results = self.executor.map_unordered(relax_shard, jobs)
        try:
            for res in results:
                ready[res.index] = res
                while k in ready:
                    res = ready.pop(k)
                    shard = shards[k]
                    k += 1
                    if not res.ok:
                        why = f"{type(res.error).__name__}: {res.error}"
                        self.store.record_shard_failure(n, shard.key, why)
                        self._notice(
                            f"iteration {n}: a shard of {shard.size} structures failed "
                            f"({why}); a resumed run retries it"
                        )
                        continue
                    assert res.value is not None
                    for f in res.value.failures:
                        failures.setdefault(f.composition, f.reason)
                    relaxed += self._store_shard(n, shard, res.value, committee)
                    if shard.key in failed:  # a retried shard: its failure note goes
                        self.store.clear_shard_failure(n, shard.key)
                    rate = relaxed / max(time.perf_counter() - t0, 1e-9)
                    self.emit(
                        StageProgress(n, Stage.SEARCH, relaxed, left, unit="structures", rate=rate)
                    )
                    if k < len(shards) and search_should_stop(
                        self._count_status(n, RelaxStatus.UNPHYSICAL), b_max
                    ):
                        self._notice(
                            f"iteration {n}: B_max = {b_max} unphysical structures: search ends"
                        )
                        return relaxed
        finally:
            results.close()  # an early stop cancels the rest
            for comp, reason in sorted(failures.items()):
                self._notice(f"could not generate {comp}: {reason}")
        return relaxed

    def _search_plan(self, n: int) -> list[SearchShard]:
        """Iteration n's shards not stored yet, in order: the reference phases, the random
        structures (``GenerateSpec`` shards of ``relax_chunk`` cells), the decorations.

        An iteration whose random structures were stored before its search (a campaign
        begun by an alcsp that generated them in the driver) relaxes those instead."""
        cfg = self.config.campaign
        done = self.store.relaxed_initial_ids("acnn")
        size = cfg.relax_chunk

        def stored(ids: list[int]) -> list[SearchShard]:
            chunks = (ids[s : s + size] for s in range(0, len(ids), size))
            return [
                SearchShard(ids=tuple(c))
                for ch in chunks
                if (c := [i for i in ch if i not in done])
            ]

        plan = stored(self._reference_starts(n))
        generated = self.store.generated_shards(n)
        legacy = self.store.structure_ids(origin=Origin.RANDOM, iteration=n)
        if legacy and not generated:
            plan += stored(legacy)
        elif cfg.structures_per_iteration:
            cells = self.random_plan(cfg.structures_per_iteration, n, stage=1)
            hints = tuple(sorted(self._volume_hints().items()))
            for k, s in enumerate(range(0, len(cells), size)):
                if k not in generated:
                    spec = GenerateSpec(
                        tuple(cells[s : s + size]), self.config.generate, (cfg.seed, n, 1, k), hints
                    )
                    plan.append(SearchShard(shard=k, spec=spec))
        return plan + stored(self._decoration_starts(n))

    def _model_path(self, n: int) -> Path:
        rec = [r for r in self.store.models() if r.iteration == n]
        return self.store.model_path(rec[-1])

    def _store_shard(
        self, n: int, shard: SearchShard, result: ShardResult, committee: Committee | None
    ) -> int:
        """Store one shard's relaxations (and trust frames); returns how many."""
        results = list(result.results)
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
                fingerprint=fp,
            )
            for sid, r, fp in zip(
                shard.ids or [None] * len(results), results, result.fingerprints, strict=True
            )
        ]
        finals = [r.atoms for r in results]
        if shard.spec is not None:
            assert result.generated is not None
            picks = [] if committee is None else self._trust_picks(n, results, committee)
            self.store.add_generated_shard(n, shard.shard, result.generated, finals, records, picks)
            return len(results)
        if committee is not None:  # before add_relaxed: a redone chunk adds none twice
            have = self.store.children(Origin.TRUST_FRAME)
            keep = [j for j, sid in enumerate(shard.ids) if sid not in have]
            picks = self._trust_picks(n, [results[j] for j in keep], committee)
            if picks:
                self.store.add_structures(
                    [f for _, f in picks],
                    origin=Origin.TRUST_FRAME,
                    iteration=n,
                    parent_ids=[shard.ids[keep[j]] for j, _ in picks],
                )
        self.store.add_relaxed(finals, records, iteration=n)
        return len(results)

    def _trust_picks(
        self, n: int, results: list[RelaxResult], committee: Committee
    ) -> list[tuple[int, Atoms]]:
        """(index into ``results``, frame): the first frame past the committee's trust level
        of each relaxation that did not converge (none when no frame before the end
        crosses it)."""
        threshold = self.config.selection.for_iteration(n).force_deviation
        todo = [
            j
            for j, r in enumerate(results)
            if r.status != RelaxStatus.CONVERGED and len(r.frames) > 1
        ]
        if not todo:
            return []
        frames = [f for j in todo for f in results[j].frames]
        dev = committee.evaluate(frames, self.config.campaign.pressure).force_deviation  # [F]
        picks, start = [], 0
        for j in todo:
            r = results[j]
            k = first_crossing(dev[start : start + len(r.frames)], threshold)
            start += len(r.frames)
            if k is not None and k < len(r.frames) - 1:
                picks.append((j, r.frames[k].copy()))
        return picks

    def _decoration_starts(self, n: int) -> list[int]:
        """Iteration n's decorations of the ``[campaign] decorations`` lattices (every one
        of the space's compositions, up to ``max_cell_atoms``), scaled to the mean volume
        per atom of their elements: the oracle's where it has relaxed the element (a
        reference), else the generator's start volume. Stored once per iteration."""
        lattices = self.config.campaign.decorations
        ids = self.store.structure_ids(origin=Origin.DECORATION, iteration=n)
        if ids or not lattices:
            return ids
        from alcsp.decorations import decoration_starts
        from alcsp.generate import start_volume_per_atom

        hints = self._volume_hints()
        volumes = {
            el: hints.get(el) or start_volume_per_atom(el, self.config.generate)[0]
            for el in self.config.elements
        }
        starts = decoration_starts(
            lattices,
            [e.key for e in self.space],
            self.config.elements,
            self.config.compositions.max_cell_atoms,
            volumes,
        )
        return self.store.add_structures(starts, origin=Origin.DECORATION, iteration=n)

    def _reference_starts(self, n: int) -> list[int]:
        """The reference phases as starts of iteration n's ACNN search (their oracle-relaxed
        geometry where there is one), so that they are on the ACNN hull too."""
        ids = self.store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=n)
        refs = self.store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=0)
        if ids or not refs:
            return ids
        relaxed = {
            r.parent_id: r.structure_id
            for r in self.store.oracle_relaxations(OracleStage.REFERENCES)
            if r.structure_id is not None
        }
        starts = self.store.get_atoms([relaxed.get(i, i) for i in refs])
        return self.store.add_structures(
            starts, origin=Origin.REFERENCE_PHASE, iteration=n, parent_ids=refs
        )

    def select(
        self, n: int, model: ACNN | None = None, committee: Committee | None = None
    ) -> list[int]:
        """Hull from this iteration's ACNN enthalpies, then the composition-wise selection
        (with a committee: its energy spreads for the lower confidence bound, and the trust
        frames of the relaxations that did not converge in their place).

        An element with no converged relaxation in this iteration (its random cells all went
        unphysical, say) would leave every composition containing it off the hull; with
        ``model`` given, earlier structures of that element stand in (``terminal_references``).
        """
        rel = self.store.relaxations(iteration=n, method="acnn")
        if len(rel.id) == 0:
            return []
        keys = np.array([composition_key(c) for c in rel.composition], dtype=object)
        e_hull = np.full(len(keys), np.nan)
        conv = rel.status == RelaxStatus.CONVERGED
        ref_keys, ref_h = self.terminal_references(n, set(keys[conv]), model)
        n_conv = int(conv.sum())
        hull = self._hull(
            np.concatenate([keys[conv], ref_keys]),
            np.concatenate([rel.enthalpy_per_atom[conv], ref_h]),
        )
        if hull is not None:
            own = hull[1] < n_conv  # this iteration's entries; the references come after
            idx, values = hull[1][own], hull[0].e_hull[own]
            e_hull[np.nonzero(conv)[0][idx]] = values
            self.store.set_e_hull(rel.id[conv][idx].tolist(), values.tolist())
        fps = self.store.fingerprints(rel.id.tolist())
        spread = np.zeros(len(keys))  # [S] eV/atom
        frames: dict[int, int] = {}
        if committee is not None:
            placed = np.nonzero(conv & np.isfinite(e_hull))[0]
            atoms = self.store.get_atoms([int(i) for i in rel.structure_id[placed]])
            spread[placed] = committee.evaluate(atoms, self.config.campaign.pressure).energy_std
            frames = self.store.children(Origin.TRUST_FRAME)
        candidates = []
        for k in range(len(keys)):
            status = str(rel.status[k])
            if status == RelaxStatus.CONVERGED and not math.isfinite(e_hull[k]):
                continue  # a composition the ACNN hull could not place (missing terminal)
            sid = int(rel.structure_id[k])
            if status != RelaxStatus.CONVERGED:
                sid = frames.get(int(rel.initial_id[k]), sid)
            candidates.append(
                Candidate(
                    id=str(sid),
                    composition=str(keys[k]),
                    enthalpy_per_atom=float(rel.enthalpy_per_atom[k]),
                    e_hull=float(e_hull[k]),
                    status=status,
                    fingerprint=fps.get(int(rel.id[k])),
                    spread=float(spread[k]),
                )
            )
        labelled = self._labelled_before(n)
        known = self._labelled_basins(labelled, model)
        full = select_for_labelling(
            candidates,
            self.config.selection.for_iteration(n),
            labelled_ids=[str(i) for i in labelled],
            labelled=known,
            dedup=self.config.dedup,
        )
        cap = self.iteration_cap(n)
        selection = cap_selection(full, cap, self.config.campaign.failure_share)
        ids = self._within_budget([int(i) for i in selection.ids])
        capped = (
            f" (cap {cap}: {len(full.minima)} minima, {len(full.failures)} failures before it)"
            if len(selection.ids) < len(full.ids)
            else ""
        )
        self._notice(
            f"iteration {n}: selected {len(selection.minima)} minima from "
            f"{len(selection.compositions)} compositions + {len(selection.failures)} "
            f"unconverged/unphysical{capped}; labelling {len(ids)}"
        )
        return ids

    def _labelled_basins(self, labelled: set[int], model: ACNN | None) -> Deduplicator:
        """The labelled ACNN minima as a Deduplicator, for the selection to skip basins the
        oracle has already seen. Their enthalpies are those of ``model`` (this iteration's,
        at the stored geometries), so that they compare with this iteration's candidates:
        the enthalpies stored when they were relaxed come from an earlier model, and after
        training on a basin's own label the model's enthalpy of it moves by more than the
        duplicate check's energy tolerance, so the same basin was selected again (Cu-Au: a
        P2_1/c CuAu labelled in three iterations). Without a model, the stored ones."""
        known = Deduplicator(self.config.dedup)
        rel = self.store.relaxations(method="acnn")
        fps = self.store.fingerprints(rel.id.tolist())
        rows = [
            k
            for k, sid in enumerate(rel.structure_id)
            if int(sid) in labelled and fps.get(int(rel.id[k])) is not None
        ]
        h = np.array([float(rel.enthalpy_per_atom[k]) for k in rows])  # [R] eV/atom
        if model is not None and rows:
            atoms = self.store.get_atoms([int(rel.structure_id[k]) for k in rows])
            h = self._model_enthalpies(model, atoms)
        for k, hk in zip(rows, h, strict=True):
            if math.isfinite(hk):
                key = composition_key(rel.composition[k])
                known.add(str(rel.structure_id[k]), key, float(hk), fps[int(rel.id[k])])
        return known

    def _model_enthalpies(self, model: ACNN, atoms: list[Atoms], chunk: int = 256) -> np.ndarray:
        """Enthalpies per atom [S] (eV/atom) of ``model`` at the given geometries (single
        points at the campaign's pressure), in chunks of ``chunk`` structures."""
        pot = ACNNPotential(model, dtype=torch.float64)
        p = self.config.campaign.pressure * GPA
        out = np.empty(len(atoms))
        for start in range(0, len(atoms), chunk):
            part = atoms[start : start + chunk]
            batch = StructureBatch.from_atoms(part, dtype=torch.float64)
            energy = pot.compute(batch).energy.detach().numpy()  # [s] eV
            for j, (a, e) in enumerate(zip(part, energy, strict=True)):
                out[start + j] = (float(e) + p * a.get_volume()) / len(a)
        return out

    def iteration_cap(self, n: int) -> int | None:
        """Oracle single points iteration ``n`` may spend: ``oracle_per_iteration``, and with
        an ``oracle_budget`` at most a fair share of what was left when the iteration began
        (left / (iterations left + 1), the final stage counting as one). None: no cap.
        Computed from the calls before iteration n, so a resumed selection is the same."""
        cfg = self.config.campaign
        caps = [cfg.oracle_per_iteration] if cfg.oracle_per_iteration else []
        if cfg.oracle_budget:
            calls = self.store.oracle_calls()
            used = sum(calls.values()) - calls.get(f"iteration {n}", 0)
            left = max(0, cfg.oracle_budget - used)
            caps.append(max(1, left // (cfg.max_iterations - n + 2)))
        return min(caps) if caps else None

    def label(self, ids: list[int], n: int) -> LabelSummary:
        done = failed = 0

        def progress(sid: int, result: LabelResult) -> None:
            nonlocal done, failed
            done += 1
            failed += not result.ok
            self.emit(StageProgress(n, Stage.LABEL, done, len(ids), failed, unit="oracle jobs"))

        self.emit(StageStarted(n, Stage.LABEL, len(ids), "oracle jobs"))
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
        self._notice(f"iteration {n}: model {n} on its {len(new)} new labels: {m}")
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
        """Relax with the oracle every terminal and the lowest distinct near-hull structures
        (``final_candidates``); store and report the final DFT hull.

        One round per state of the campaign: the picks are stored before any relaxation
        starts, so a kill resumes the same picks (each from its checkpoint); a campaign
        extended by more iterations gets a new round over the candidates not relaxed yet.
        """
        m = self.config.final.structures
        if m > 0:
            finished = [it.index for it in self.store.iterations() if it.finished is not None]
            round_ = max(finished, default=0)
            raw = self.store.meta("final_picks")
            stored = json.loads(raw) if raw else None
            if stored is None or stored["round"] != round_:
                stored = {"round": round_, "terminals": self.final_terminals(), "compounds": None}
                self.store.set_meta("final_picks", json.dumps(stored))
            self._final_relax([int(i) for i in stored["terminals"]], round_)
            # Compounds are chosen on the hull of the relaxed terminals: a terminal far from
            # its minimum shifts every formation enthalpy and so every E_hull window.
            if stored["compounds"] is None:
                stored["compounds"] = self.final_compounds(m)
                self.store.set_meta("final_picks", json.dumps(stored))
            self._final_relax([int(i) for i in stored["compounds"]], round_)
        hull = self.oracle_hull()
        if hull is not None:
            self.store.set_meta("final_hull", json.dumps(hull.to_json()))
            self._notice(
                "final hull: "
                + ", ".join(
                    f"{k} ({v * 1000:.1f} meV/atom)" for k, v in sorted(hull.stable.items())
                )
            )
            for warning in self.terminal_warnings():
                self._notice(warning, warning=True)
        return hull

    def _final_relax(self, ids: list[int], round_: int) -> None:
        done = {r.parent_id for r in self.store.oracle_relaxations(OracleStage.FINAL)}
        todo = [i for i in ids if i not in done]
        if todo:
            self._oracle_relax(todo, OracleStage.FINAL, round_)

    def final_terminals(self) -> list[int]:
        """Every element's lowest label, unless it is already an oracle-relaxed structure
        (a relaxed reference, an earlier round) or was relaxed before."""
        return self._final_candidates(0)[0]

    def final_compounds(self, m: int) -> list[int]:
        """Up to ``m`` compounds: per composition within ``[final] e_hull_window`` of the
        DFT hull, its labels in E_hull order without fingerprint duplicates (of each other
        or of anything relaxed before), taken round robin over the compositions in order of
        their best E_hull. Never one relaxed before."""
        return self._final_candidates(m)[1]

    def _final_candidates(self, m: int) -> tuple[list[int], list[int]]:
        lh = self._labelled_hull()
        if lh is None:
            return [], []
        choice = final_choice(
            lh,
            {r.parent_id for r in self.store.oracle_relaxations()},
            self.config.elements,
            self.config.dedup,
            self.config.final.e_hull_window,
            m,
            self._fingerprint,
        )
        return choice.terminals, choice.compounds

    def terminal_warnings(self) -> list[str]:
        return terminal_warnings(self.store, self.config)

    # ------------------------------------------------------------------ helpers
    def converged(self, n: int) -> bool:
        return self.stop_reason(n) is not None

    def stop_reason(self, n: int) -> str | None:
        """Why the search may stop after iteration ``n``, or None to go on.

        Converged means: in each of the last K = ``hull_patience`` iterations no new oracle
        label landed within ``stop_window`` of the DFT hull (built from every label so far),
        and, with a committee, its energy spread on every label within that window is below
        ``hull_tolerance`` (the model agrees with itself where the hull is). An unchanged
        stable set is not enough: two runs stopped on an unchanged but wrong one. In a
        campaign with references, a hull of the elements alone never counts as converged
        (the compounds, labelled at rough ML geometries, all sit above it at first).
        """
        cfg = self.config.campaign
        k = cfg.hull_patience
        if n < k or n < 1:
            return None
        recent = range(n - k + 1, n + 1)
        for i in recent:
            if i not in self._iteration_indices() or self.store.iteration(i).finished is None:
                return None
        lh = self._labelled_hull()
        if lh is None:
            return None
        stable = set(lh.hull.stable_keys)
        if stable <= set(self.config.elements) and self.reference_names():
            return None
        window = cfg.stop_window_ev
        near = [j for j in range(len(lh.kept)) if lh.hull.e_hull[j] <= window + 1e-12]
        landed = sorted(
            {int(lh.structures[lh.kept[j]].info["iteration"]) for j in near} & set(recent)
        )
        if landed:
            return None
        why = (
            f"no new label within {window * 1000:.1f} meV/atom of the DFT hull in "
            f"iterations {recent[0]}-{recent[-1]}"
        )
        spread = self._committee_spread(n, [lh.structures[lh.kept[j]] for j in near])
        if spread is not None:
            if spread >= cfg.hull_tolerance:
                return None
            why += (
                f", committee spread on the {len(near)} near-hull labels at most "
                f"{spread * 1000:.1f} meV/atom"
            )
        return why

    def _committee_spread(self, n: int, structures: list[Atoms]) -> float | None:
        """Largest committee energy spread (eV/atom) of iteration n's committee over
        ``structures``; None without a committee."""
        committee = self._stored_committee(n)
        if committee is None or not structures:
            return None
        ev = committee.evaluate(structures, self.config.campaign.pressure)
        return float(np.max(ev.energy_std))

    def budget_left(self) -> int | None:
        """Oracle calls left: single points and every step of every oracle relaxation."""
        b = self.config.campaign.oracle_budget
        return None if b == 0 else max(0, b - sum(self.store.oracle_calls().values()))

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
        return self.store.labelled_before(self.oracle.name, n)

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
        rel = self.store.relaxations(status=RelaxStatus.CONVERGED, method="acnn")
        ids: list[int] = []
        for el in missing:
            own = [
                k
                for k in range(len(rel.id))
                if rel.iteration[k] < n and composition_key(rel.composition[k]) == el
            ]
            own.sort(key=lambda k: rel.enthalpy_per_atom[k])
            ids += [int(rel.structure_id[k]) for k in own[:3]]
        atoms = self.store.get_atoms(ids) + [
            a
            for a in self._within_force_cap(self.store.training_set(self.oracle.name))
            if composition_key(a.get_chemical_formula()) in missing
        ]
        best: dict[str, float] = {}
        for a, h in zip(atoms, self._model_enthalpies(model, atoms), strict=True):
            key = composition_key(a.get_chemical_formula())
            if math.isfinite(h) and h < best.get(key, math.inf):
                best[key] = float(h)
        for el in missing:
            self._notice(
                f"iteration {n}: no converged {el} relaxation in this iteration; "
                + (
                    f"hull reference {best[el]:.4f} eV/atom from earlier {el} structures"
                    if el in best
                    else f"none earlier either: compositions with {el} "
                    "are left out of this iteration's ACNN hull"
                )
            )
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
        return relaxed_fingerprint(atoms, self.config.dedup.fingerprint)

    def _relax_stats(self, n: int) -> dict:
        rel = self.store.relaxations(iteration=n, method="acnn")
        status = rel.status
        return {
            "relaxations": int(len(status)),
            "converged": int((status == RelaxStatus.CONVERGED).sum()),
            "max_steps": int((status == RelaxStatus.MAX_STEPS).sum()),
            "unphysical": int((status == RelaxStatus.UNPHYSICAL).sum()),
        }

    def _count_status(self, n: int, status: str) -> int:
        return self.store.relaxations(iteration=n, method="acnn").count(status)

    def _volume_hints(self) -> dict[str, float]:
        """Start volumes per atom per composition, from the oracle, never from model
        minima (an early model relaxes a phase 10 % too dense, and random cells started
        there inherit it): the median over the composition's oracle-relaxed structures and
        its labels whose oracle pressure is within 10 % (at least 2 GPa) of the target."""
        p = self.config.campaign.pressure
        tol = max(0.1 * abs(p), 2.0)
        vols: dict[str, list[float]] = {}
        for a in self.store.training_set(self.oracle.name):
            ok = a.info["origin"] == Origin.ORACLE_RELAXED
            if not ok and "stress" in a.calc.results:
                ok = abs(-float(np.trace(a.calc.results["stress"])) / 3 / GPA - p) <= tol
            if ok:
                key = composition_key(a.get_chemical_formula())
                vols.setdefault(key, []).append(a.get_volume() / len(a))
        return {k: float(np.median(v)) for k, v in vols.items()}


@dataclass(frozen=True)
class SearchShard:
    """One shard of an iteration's search: stored structures (``ids``) or shard ``shard`` of
    the random structures, which its worker generates from ``spec``."""

    ids: tuple[int, ...] = ()
    shard: int = -1
    spec: GenerateSpec | None = None

    @property
    def size(self) -> int:
        return len(self.spec.cells) if self.spec is not None else len(self.ids)

    @property
    def key(self) -> str:
        """Its name in the store's failure notes: ``g<shard>`` or ``s<first id>``."""
        return f"g{self.shard}" if self.spec is not None else f"s{self.ids[0]}"


class _ShardJobs(Sequence[ShardJob]):
    """The ``ShardJob`` of each shard, built when the executor asks for it, so that only the
    shards in flight hold their structures (a search of 10⁵ stored starts would otherwise
    be loaded whole before the first is relaxed)."""

    def __init__(
        self,
        store: CampaignStore,
        shards: list[SearchShard],
        model_path: str,
        pressure: float,
        relax: RelaxConfig,
        config: CampaignConfig,
    ) -> None:
        self._store, self._shards = store, shards
        self._args = (model_path, pressure, relax, config.dedup.fingerprint)

    def __len__(self) -> int:
        return len(self._shards)

    @overload
    def __getitem__(self, index: int) -> ShardJob: ...
    @overload
    def __getitem__(self, index: slice) -> list[ShardJob]: ...
    def __getitem__(self, index: int | slice) -> ShardJob | list[ShardJob]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        shard = self._shards[index]
        path, pressure, relax, fingerprint = self._args
        atoms = tuple(self._store.get_atoms(list(shard.ids))) if shard.ids else ()
        return ShardJob(path, atoms, pressure, relax, fingerprint, generate=shard.spec)
