"""The search stage: iteration n's ACNN relaxations, in shards run by the executor.

``search_plan`` cuts what iteration n has not relaxed yet into ``SearchShard``s (the
reference phases, the random structures as ``GenerateSpec`` shards, the decorations);
``search`` runs them and stores each shard as it returns, in order, checking B_max between
them. Storing per shard is what makes a kill lose at most the shards in flight, so this
stage writes to the store itself (``store_shard``), unlike the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import overload

import numpy as np
from ase import Atoms

from alcsp.campaign.context import StageContext
from alcsp.campaign.events import StageProgress, StageStarted
from alcsp.committee import Committee, first_crossing
from alcsp.compositions import CompositionSpace
from alcsp.config import CampaignConfig
from alcsp.execute import TaskResult
from alcsp.relax.config import RelaxConfig
from alcsp.relax.runner import RelaxResult
from alcsp.search import GenerateSpec, ShardJob, ShardResult, relax_shard
from alcsp.select import search_should_stop
from alcsp.store import CampaignStore, RelaxationRecord
from alcsp.units import GPA
from alcsp.vocab import OracleStage, Origin, RelaxStatus, Stage, composition_key


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


def cells(space: CompositionSpace, count: int, rng: np.random.Generator) -> list[str]:
    """The cell composition (e.g. ``"Cu2Au2"``) of each of ``count`` random structures:
    round robin over the compositions, each with a random number of formula units."""
    entries = list(space)
    out = []
    for k in range(count):
        entry = entries[k % len(entries)]
        cell = entry.cell_compositions()[rng.integers(len(entry.formula_units))]
        out.append(cell.formula.replace(" ", ""))
    return out


def volume_hints(ctx: StageContext) -> dict[str, float]:
    """Start volumes per atom per composition, from the oracle, never from model
    minima (an early model relaxes a phase 10 % too dense, and random cells started
    there inherit it): the median over the composition's oracle-relaxed structures and
    its labels whose oracle pressure is within 10 % (at least 2 GPa) of the target."""
    p = ctx.config.campaign.pressure
    tol = max(0.1 * abs(p), 2.0)
    vols: dict[str, list[float]] = {}
    for a in ctx.store.training_set(ctx.oracle_name):
        ok = a.info["origin"] == Origin.ORACLE_RELAXED
        if not ok and "stress" in a.calc.results:
            ok = abs(-float(np.trace(a.calc.results["stress"])) / 3 / GPA - p) <= tol
        if ok:
            key = composition_key(a.get_chemical_formula())
            vols.setdefault(key, []).append(a.get_volume() / len(a))
    return {k: float(np.median(v)) for k, v in vols.items()}


def decoration_starts(ctx: StageContext, space: CompositionSpace, n: int) -> list[int]:
    """Iteration n's decorations of the ``[campaign] decorations`` lattices (every one
    of the space's compositions, up to ``max_cell_atoms``), scaled to the mean volume
    per atom of their elements: the oracle's where it has relaxed the element (a
    reference), else the generator's start volume. Stored once per iteration."""
    cfg = ctx.config
    lattices = cfg.campaign.decorations
    ids = ctx.store.structure_ids(origin=Origin.DECORATION, iteration=n)
    if ids or not lattices:
        return ids
    from alcsp.decorations import decoration_starts as decorate
    from alcsp.generate import start_volume_per_atom

    hints = volume_hints(ctx)
    volumes = {
        el: hints.get(el) or start_volume_per_atom(el, cfg.generate)[0] for el in cfg.elements
    }
    starts = decorate(
        lattices,
        [e.key for e in space],
        cfg.elements,
        cfg.compositions.max_cell_atoms,
        volumes,
    )
    return ctx.store.add_structures(starts, origin=Origin.DECORATION, iteration=n)


def reference_starts(ctx: StageContext, n: int) -> list[int]:
    """The reference phases as starts of iteration n's ACNN search (their oracle-relaxed
    geometry where there is one), so that they are on the ACNN hull too."""
    store = ctx.store
    ids = store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=n)
    refs = store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=0)
    if ids or not refs:
        return ids
    relaxed = {
        r.parent_id: r.structure_id
        for r in store.oracle_relaxations(OracleStage.REFERENCES)
        if r.structure_id is not None
    }
    starts = store.get_atoms([relaxed.get(i, i) for i in refs])
    return store.add_structures(starts, origin=Origin.REFERENCE_PHASE, iteration=n, parent_ids=refs)


def search_plan(ctx: StageContext, space: CompositionSpace, n: int) -> list[SearchShard]:
    """Iteration n's shards not stored yet, in order: the reference phases, the random
    structures (``GenerateSpec`` shards of ``relax_chunk`` cells), the decorations.

    An iteration whose random structures were stored before its search (a campaign
    begun by an alcsp that generated them in the driver) relaxes those instead."""
    cfg = ctx.config.campaign
    store = ctx.store
    done = store.relaxed_initial_ids("acnn")
    size = cfg.relax_chunk

    def stored(ids: list[int]) -> list[SearchShard]:
        chunks = (ids[s : s + size] for s in range(0, len(ids), size))
        return [
            SearchShard(ids=tuple(c)) for ch in chunks if (c := [i for i in ch if i not in done])
        ]

    plan = stored(reference_starts(ctx, n))
    generated = store.generated_shards(n)
    legacy = store.structure_ids(origin=Origin.RANDOM, iteration=n)
    if legacy and not generated:
        plan += stored(legacy)
    elif cfg.structures_per_iteration:
        planned = cells(space, cfg.structures_per_iteration, ctx.rng(n, 1))
        hints = tuple(sorted(volume_hints(ctx).items()))
        for k, s in enumerate(range(0, len(planned), size)):
            if k not in generated:
                spec = GenerateSpec(
                    tuple(planned[s : s + size]), ctx.config.generate, (cfg.seed, n, 1, k), hints
                )
                plan.append(SearchShard(shard=k, spec=spec))
    return plan + stored(decoration_starts(ctx, space, n))


def trust_picks(
    results: list[RelaxResult], committee: Committee, threshold: float, pressure_gpa: float
) -> list[tuple[int, Atoms]]:
    """(index into ``results``, frame): the first frame past the committee's trust level
    ``threshold`` (eV/Å, force deviation) of each relaxation that did not converge (none
    when no frame before the end crosses it)."""
    todo = [
        j for j, r in enumerate(results) if r.status != RelaxStatus.CONVERGED and len(r.frames) > 1
    ]
    if not todo:
        return []
    frames = [f for j in todo for f in results[j].frames]
    dev = committee.evaluate(frames, pressure_gpa).force_deviation  # [F]
    picks, start = [], 0
    for j in todo:
        r = results[j]
        k = first_crossing(dev[start : start + len(r.frames)], threshold)
        start += len(r.frames)
        if k is not None and k < len(r.frames) - 1:
            picks.append((j, r.frames[k].copy()))
    return picks


def store_shard(
    ctx: StageContext,
    n: int,
    shard: SearchShard,
    result: ShardResult,
    committee: Committee | None,
) -> int:
    """Store one shard's relaxations (and trust frames); returns how many."""
    store = ctx.store
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
    threshold = ctx.config.selection.for_iteration(n).force_deviation
    pressure = ctx.config.campaign.pressure
    if shard.spec is not None:
        assert result.generated is not None
        picks = [] if committee is None else trust_picks(results, committee, threshold, pressure)
        store.add_generated_shard(n, shard.shard, result.generated, finals, records, picks)
        return len(results)
    if committee is not None:  # before add_relaxed: a redone chunk adds none twice
        have = store.children(Origin.TRUST_FRAME)
        keep = [j for j, sid in enumerate(shard.ids) if sid not in have]
        picks = trust_picks([results[j] for j in keep], committee, threshold, pressure)
        if picks:
            store.add_structures(
                [f for _, f in picks],
                origin=Origin.TRUST_FRAME,
                iteration=n,
                parent_ids=[shard.ids[keep[j]] for j, _ in picks],
            )
    store.add_relaxed(finals, records, iteration=n)
    return len(results)


def _unphysical(ctx: StageContext, n: int) -> int:
    return ctx.store.relaxations(iteration=n, method="acnn").count(RelaxStatus.UNPHYSICAL)


def search(
    ctx: StageContext,
    space: CompositionSpace,
    n: int,
    model_path: Path,
    committee: Committee | None = None,
) -> int:
    """Relax random structures with ACNN (model file ``model_path``), in fixed chunks,
    until B_max unphysical ones have appeared or the iteration's budget is spent. Returns
    structures relaxed now.

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
    cfg, store = ctx.config, ctx.store
    b_max = cfg.selection.for_iteration(n).b_max
    relax_cfg = cfg.relax
    if committee is not None and relax_cfg.frame_interval == 0:
        relax_cfg = replace(relax_cfg, frame_interval=5)
    shards = search_plan(ctx, space, n)
    if not shards:
        return 0
    if search_should_stop(_unphysical(ctx, n), b_max):
        ctx.notice(f"iteration {n}: B_max = {b_max} unphysical structures: search ends")
        return 0
    jobs = _ShardJobs(store, shards, str(model_path), cfg.campaign.pressure, relax_cfg, cfg)
    relaxed, left = 0, sum(s.size for s in shards)
    ctx.emit(StageStarted(n, Stage.SEARCH, left, "structures"))
    t0 = time.perf_counter()
    ready: dict[int, TaskResult[ShardResult]] = {}
    failed = store.shard_failures(n)
    failures: dict[str, str] = {}
    k = 0  # the next shard to store
    results = ctx.executor().map_unordered(relax_shard, jobs)
    try:
        for res in results:
            ready[res.index] = res
            while k in ready:
                res = ready.pop(k)
                shard = shards[k]
                k += 1
                if not res.ok:
                    why = f"{type(res.error).__name__}: {res.error}"
                    store.record_shard_failure(n, shard.key, why)
                    ctx.notice(
                        f"iteration {n}: a shard of {shard.size} structures failed "
                        f"({why}); a resumed run retries it"
                    )
                    continue
                assert res.value is not None
                for f in res.value.failures:
                    failures.setdefault(f.composition, f.reason)
                relaxed += store_shard(ctx, n, shard, res.value, committee)
                if shard.key in failed:  # a retried shard: its failure note goes
                    store.clear_shard_failure(n, shard.key)
                rate = relaxed / max(time.perf_counter() - t0, 1e-9)
                ctx.emit(
                    StageProgress(n, Stage.SEARCH, relaxed, left, unit="structures", rate=rate)
                )
                if k < len(shards) and search_should_stop(_unphysical(ctx, n), b_max):
                    ctx.notice(f"iteration {n}: B_max = {b_max} unphysical structures: search ends")
                    return relaxed
    finally:
        results.close()  # an early stop cancels the rest
        for comp, reason in sorted(failures.items()):
            ctx.notice(f"could not generate {comp}: {reason}")
    return relaxed


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
