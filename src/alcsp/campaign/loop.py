"""The active-learning campaign (paper Fig. 2 and section II.C), one screen per stage.

    iteration 0:  the [references] phases and N0 random structures ─► label them with the
                  oracle ─► relax the references with the oracle
    iteration n:  train ACNN (warm start) ─► generate + relax random structures with ACNN until
                  B_max unphysical or the budget ─► deduplicate, hull from ACNN enthalpies ─►
                  select C_max × L_max + unconverged/unphysical ─► label ─► validate model n on
                  those labels (Fig. 3) ─► hull from all oracle labels ─► converged?
    finally:      relax with the oracle every terminal and the lowest distinct structures of
                  the near-hull compositions (round robin), final hull

This module composes the stages and holds the resume logic; each stage is a function of a
``StageContext`` (``context``) in its own module: ``training`` (model n and its committee),
``search`` (the ACNN relaxations, in shards), ``selection`` (what to label), ``final`` (the
oracle relaxations), ``stopping`` (the stop rule). Labelling is ``alcsp.label``.

Every stage reads what the store already holds and only adds what is missing, committing
each unit of work as it finishes, and all randomness is drawn from generators seeded by
(seed, iteration, stage). So ``Campaign.open(dir).run()`` after a ``kill -9`` anywhere
continues exactly where it stopped and ends with the same labels and hull as a run that was
never interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase import Atoms

from alcsp import __version__
from alcsp.campaign import final, search, selection, stopping, training
from alcsp.campaign.context import StageContext
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
from alcsp.campaign.training import within_force_cap
from alcsp.committee import Committee
from alcsp.compositions import enumerate_compositions
from alcsp.config import CampaignConfig, parse_config
from alcsp.execute import make_executor
from alcsp.generate import StructureGenerator
from alcsp.label import LabelSummary, label_structures
from alcsp.oracle.base import LabelResult
from alcsp.oracle.factory import make_oracle
from alcsp.potential import evaluate
from alcsp.potential.model import ACNN
from alcsp.references import Reference, load_references
from alcsp.store import CampaignStore, IterationCounts, ModelErrors
from alcsp.store.hulls import (
    HullSnapshot,
    reference_names,
)
from alcsp.vocab import Origin, Stage, composition_key

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

    @property
    def context(self) -> StageContext:
        """What the stages read: this campaign's config, store, oracle, executor, events."""
        return StageContext(self.config, self.store, self.oracle, self.emit, lambda: self.executor)

    def budget_left(self) -> int | None:
        return self.context.budget_left()

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
            started = {it.index for it in self.store.iterations()}
            why = stopping.stop_reason(self.context, n - 1)
            if why is not None:
                reason = f"converged: {why}"
                break
            if self.budget_left() == 0:
                reason = "oracle budget spent"
                break
            record = self.store.iteration(n) if n in started else None
            if record is not None and record.finished is not None:
                continue
            self.iteration(n)
        else:
            why = stopping.stop_reason(self.context, cfg.max_iterations)
            if why is not None:
                reason = f"converged: {why}"
        self.emit(CampaignStopped(reason))
        self.store.set_meta("stop_reason", reason)
        return final.final_relaxation(self.context)

    def iteration(self, n: int) -> None:
        t0 = time.perf_counter()
        self.store.start_iteration(n, Stage.TRAIN)
        ctx = self.context
        model = training.train(ctx, n)
        committee = training.committee(ctx, n, model)
        t1 = time.perf_counter()
        self.store.update_iteration(n, stage=Stage.SEARCH, timings={"train": t1 - t0})
        n_relaxed = search.search(ctx, self.space, n, training.model_path(ctx, n), committee)
        t2 = time.perf_counter()
        self.store.update_iteration(n, stage=Stage.SELECT, timings={"search": t2 - t1})
        ids = self.select(n, model, committee)
        counts = replace(self._relax_stats(n), relaxed=n_relaxed, selected=len(ids))
        self.store.update_iteration(n, stage=Stage.LABEL, counts=counts.to_json())
        self.label(ids, n)
        ok, failed = self._label_counts(ids)
        t3 = time.perf_counter()
        counts = replace(
            counts, labelled=ok, label_failures=failed, validation=self.validate(n, model)
        )
        hull = self.context.oracle_hull()
        self.store.update_iteration(
            n,
            stage=Stage.DONE,
            hull=hull.to_json() if hull else None,
            finished=True,
            counts=counts.to_json(),
            timings={"select_label": t3 - t2},
        )
        self.emit(
            IterationFinished(
                n,
                self.config.campaign.max_iterations,
                counts.relaxations,
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
        ids = self.context.within_budget(refs + ids)  # references first
        self.label(ids, 0)
        final.relax_references(self.context)
        if record.finished is not None:
            return  # a finished stage is never recomputed: its stored hull is history
        ok, failed = self._label_counts(ids)
        hull = self.context.oracle_hull()
        self.store.update_iteration(
            0,
            stage=Stage.DONE,
            hull=hull.to_json() if hull else None,
            finished=True,
            counts=IterationCounts(labelled=ok, label_failures=failed).to_json(),
        )

    def random_structures(
        self, count: int, iteration: int, stage: int, volumes: dict[str, float] | None = None
    ) -> list[Atoms]:
        """``count`` random structures spread evenly over the compositions (round robin),
        each with a random number of formula units; failures are reported, not hidden."""
        rng = np.random.default_rng([self.config.campaign.seed, iteration, stage])
        wanted: dict[str, int] = {}
        for key in search.cells(self.space, count, rng):
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

    def select(
        self, n: int, model: ACNN | None = None, committee: Committee | None = None
    ) -> list[int]:
        """Iteration n's selection (``selection.select``); stores the ACNN E_hull of every
        relaxation placed on its hull and returns the structure ids to label."""
        result = selection.select(self.context, n, model, committee)
        if len(result.placed):
            self.store.set_e_hull(result.placed.tolist(), result.e_hull.tolist())
        return result.ids

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

    def validate(self, n: int, model: ACNN) -> ModelErrors | None:
        """Errors of model n on the labels of iteration n (the paper's Fig. 3), over the labels
        it could have been trained on (force components within ``train_max_force``)."""
        labels = self.store.training_set(self.oracle.name)
        new = within_force_cap(
            [a for a in labels if a.info["iteration"] == n], self.config.campaign.train_max_force
        )
        if not new:
            return None
        m = evaluate(model, new)
        self._notice(f"iteration {n}: model {n} on its {len(new)} new labels: {m}")
        return ModelErrors(m.energy_mev_per_atom, m.force_mev_per_a, m.stress_gpa, m.n_structures)

    # ------------------------------------------------------------------ helpers
    def _label_counts(self, ids: list[int]) -> tuple[int, int]:
        """(successful, failed) oracle outcomes stored for ``ids``."""
        got = self.store.get_labels(ids, self.oracle.name)
        ok = sum(1 for r in got.values() if r.ok)
        return ok, len(got) - ok

    def _relax_stats(self, n: int) -> IterationCounts:
        """The counts of iteration n's ACNN relaxations by outcome."""
        return IterationCounts.of_relaxations(self.store.relaxations(iteration=n, method="acnn"))
