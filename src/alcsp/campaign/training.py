"""The training stage: model n (and the committee of iteration n) from the labels so far.

``training_set`` and ``loss_weights`` are pure (labels in, labels or weights out); ``train``
and ``committee`` train what is not on disk yet and write it, one file per model, each
written atomically, so a kill retrains only what was missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from alcsp.campaign.context import StageContext
from alcsp.campaign.events import StageProgress, StageStarted
from alcsp.committee import Committee, TrainJob, member_job, train_models
from alcsp.config import CampaignConfig
from alcsp.potential import load_model, save_model
from alcsp.potential import train as train_acnn
from alcsp.potential.model import ACNN
from alcsp.potential.train import TrainReport, hull_weights
from alcsp.store.hulls import labels_e_hull
from alcsp.vocab import Stage


@dataclass(frozen=True)
class TrainingSet:
    """The labels a model trains on, and how many were left out (kept in the store)."""

    labels: list[Atoms]
    over_force: int  # force components above [campaign] train_max_force
    over_hull: int  # more than [train] max_e_hull above the hull of the labels


def within_force_cap(labels: list[Atoms], cap: float) -> list[Atoms]:
    """The labels whose force components are all within ``cap`` eV/Å (0: all)."""
    if cap == 0:
        return labels
    return [a for a in labels if float(np.abs(a.get_forces()).max()) <= cap]


def training_set(labels: list[Atoms], config: CampaignConfig) -> TrainingSet:
    """Every successful label, ordered by structure id (not by completion order, which
    depends on the executor), without those beyond ``train_max_force`` and, with ``[train]
    max_e_hull``, those further above the hull of the kept labels (a NaN E_hull is kept)."""
    data = sorted(labels, key=lambda a: a.info["structure_id"])
    kept = within_force_cap(data, config.campaign.train_max_force)
    over_force = len(data) - len(kept)
    cap = config.train.max_e_hull
    over_hull = 0
    if cap > 0 and kept:
        e_hull = labels_e_hull(kept, config.campaign.pressure, config.elements)
        near = [a for a, e in zip(kept, e_hull, strict=True) if not e > cap]  # NaN: kept
        over_hull = len(kept) - len(near)
        kept = near
    return TrainingSet(kept, over_force, over_hull)


def loss_weights(labels: list[Atoms], config: CampaignConfig) -> np.ndarray | None:
    """Loss weights of the training labels from their distance above the hull of these
    labels (``[train] hull_weight_scale``; None when it is 0, the paper's equal weights).
    Enthalpies as every hull of the campaign: E0 + PV per atom at its pressure."""
    tc = config.train
    if tc.hull_weight_scale == 0:
        return None
    e_hull = labels_e_hull(labels, config.campaign.pressure, config.elements)
    return hull_weights(e_hull, tc.hull_weight_scale, tc.hull_weight_floor)


def training_data(ctx: StageContext) -> list[Atoms]:
    """The training set of the campaign's labels now, saying what it leaves out."""
    cfg = ctx.config
    ts = training_set(ctx.store.training_set(ctx.oracle_name), cfg)
    if ts.over_force:
        ctx.notice(
            f"training leaves out {ts.over_force} labels with force components "
            f"above {cfg.campaign.train_max_force} eV/Å (kept in the store)"
        )
    if ts.over_hull:
        ctx.notice(
            f"training leaves out {ts.over_hull} labels more than {cfg.train.max_e_hull} "
            "eV/atom above the hull of the labels ([train] max_e_hull; kept in the store)"
        )
    return ts.labels


def member_path(models_dir: Path, n: int, k: int) -> Path:
    """Committee member k of iteration n: ``models/committee/acnn-<n>-m<k>.pt``."""
    return models_dir / "committee" / f"acnn-{n:03d}-m{k}.pt"


def model_path(ctx: StageContext, n: int) -> Path:
    """The stored model n (the last one stored for iteration n)."""
    rec = [r for r in ctx.store.models() if r.iteration == n]
    return ctx.store.model_path(rec[-1])


def _member_job(ctx: StageContext, n: int, k: int) -> TrainJob:
    """Member k of iteration n: warm-started from its own member of iteration n-1
    (fresh from its own seed in the first iteration)."""
    prev = member_path(ctx.store.models_dir(), n - 1, k)
    start = load_model(prev) if prev.is_file() else ctx.config.model
    tcfg = ctx.config.committee.train_config(ctx.config.train)
    return member_job(start, tcfg, ctx.config.campaign.seed * 1000 + n + 100_003 * k)


def _save_member(ctx: StageContext, n: int, k: int, member: ACNN, report: TrainReport) -> None:
    save_model(
        member,
        member_path(ctx.store.models_dir(), n, k),
        metadata={"iteration": n, "member": k, **report.to_dict()},
    )


def _missing_members(ctx: StageContext, n: int) -> list[int]:
    models = ctx.store.models_dir()
    return [
        k for k in range(1, ctx.config.committee.size) if not member_path(models, n, k).is_file()
    ]


def train(ctx: StageContext, n: int) -> ACNN:
    """Model n: trained on every label so far, warm-started from model n-1, in a
    worker process (in the driver with the inline executor). When the iteration's
    selection uses a committee, model n trains beside the members that are still
    missing (``committee``), one thread each, so no core waits for it; alone, it takes
    the driver's torch threads, and gives the model the driver would have trained."""
    store, cfg = ctx.store, ctx.config
    for rec in store.models():
        if rec.iteration == n:
            return load_model(store.model_path(rec))
    data = training_data(ctx)
    if not data:
        raise RuntimeError(
            "no successful oracle label to train on; check the oracle failures with `alcsp status`"
        )
    previous = [r for r in store.models() if r.iteration == n - 1]
    start = load_model(store.model_path(previous[-1])) if previous else cfg.model
    tcfg = replace(cfg.train, seed=cfg.campaign.seed * 1000 + n)
    how = "warm start" if previous else "fresh"
    weights = loss_weights(data, cfg)

    def progress_all(done: int, total: int) -> None:
        ctx.emit(StageProgress(n, Stage.TRAIN, done, total, unit="steps"))

    if cfg.selection.for_iteration(n).uses_committee:
        cc = cfg.committee
        todo = _missing_members(ctx, n)
        jobs = [TrainJob(start, tcfg)] + [_member_job(ctx, n, k) for k in todo]
        steps = sum(j.train.steps for j in jobs)
        ctx.notice(
            f"iteration {n}: training ACNN ({how}) and {len(todo)} more committee members "
            f"on {len(data)} labels ({steps} steps in all, {cc.n_workers()} processes)"
        )
        ctx.emit(StageStarted(n, Stage.TRAIN, steps, "steps"))
        trained = train_models(data, jobs, cc.n_workers(), weights=weights, progress=progress_all)
        # members are written before model n is stored: a kill in between retrains model n
        for k, (member, member_report) in zip(todo, trained[1:], strict=True):
            _save_member(ctx, n, k, member, member_report)
        model, report = trained[0]
    else:
        ctx.notice(
            f"iteration {n}: training ACNN on {len(data)} labels ({how}, {tcfg.steps} steps)"
        )
        ctx.emit(StageStarted(n, Stage.TRAIN, tcfg.steps, "steps"))
        if cfg.executor.kind == "inline":  # everything in the driver

            def progress(step: int, steps: int, loss: float, val: object) -> None:
                ctx.emit(StageProgress(n, Stage.TRAIN, step, steps, unit="steps"))

            model, report = train_acnn(data, start, tcfg, progress=progress, weights=weights)
        else:  # in a worker with the driver's threads: the same model, driver free
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
        store.models_dir() / f"acnn-{n:03d}.pt",
        metadata={"iteration": n, **report.to_dict()},
    )
    store.add_model(path, n, report.to_dict())
    if report.validation:
        ctx.notice(f"iteration {n}: validation {report.validation}")
    return model


def committee(ctx: StageContext, n: int, model: ACNN) -> Committee | None:
    """Iteration n's committee when its selection uses one: model n (member 0) and
    ``[committee] size - 1`` more, trained on the same labels in parallel processes
    (``_member_job``), so the members stay independent across iterations. Members are
    files (``member_path``), written atomically: a resumed campaign reuses every finished
    one. ``train`` trains them with model n; any still missing here (model n was stored by
    a run that died before its members) are trained now."""
    cfg = ctx.config
    if not cfg.selection.for_iteration(n).uses_committee:
        return None
    cc = cfg.committee
    todo = _missing_members(ctx, n)
    if todo:
        data = training_data(ctx)
        ctx.notice(
            f"iteration {n}: training {len(todo)} more committee members on "
            f"{len(data)} labels ({cc.n_workers()} processes)"
        )
        jobs = [_member_job(ctx, n, k) for k in todo]
        trained = train_models(data, jobs, cc.n_workers(), weights=loss_weights(data, cfg))
        for k, (member, report) in zip(todo, trained, strict=True):
            _save_member(ctx, n, k, member, report)
    models = ctx.store.models_dir()
    members = [model] + [load_model(member_path(models, n, k)) for k in range(1, cc.size)]
    return Committee(members)


def stored_committee(ctx: StageContext, n: int) -> Committee | None:
    """Iteration n's committee from its files; None without one (or not all there)."""
    cfg = ctx.config
    if n < 1 or not cfg.selection.for_iteration(n).uses_committee:
        return None
    main = [r for r in ctx.store.models() if r.iteration == n]
    models = ctx.store.models_dir()
    paths = [member_path(models, n, k) for k in range(1, cfg.committee.size)]
    if not main or not all(p.is_file() for p in paths):
        return None
    return Committee([load_model(ctx.store.model_path(main[-1]))] + [load_model(p) for p in paths])
