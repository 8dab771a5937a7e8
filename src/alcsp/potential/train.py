"""Training ACNN on labelled structures (paper section II.B).

Loss (eq. 16), averaged over a minibatch of N_B structures with N_i atoms each:
    L = 1/N_B Σ_i [ p_e |E_i − Ê_i|²/N_i + p_f ‖F_i − F̂_i‖²/(3N_i) + p_w ‖W_i − Ŵ_i‖²/(3N_i) ]
with the virial W = −V σ. Optionally (``weights``, not in the paper) each structure's three
terms are multiplied by a weight w_i (normalised to a mean of 1 over the training set): the
campaign weights labels by their distance above the labelled hull, w = max(w_min,
exp(−E_hull/σ_w)) (``hull_weights``), so that the model's capacity goes where ranking
decides the answer — structures a few meV/atom apart near the hull — and not into the
eV/atom errors of collapsed cells. AdamW; the learning rate decays by ``lr_decay`` every
``decay_every`` steps (paper: ×0.97 every 10⁴ of 10⁵ steps). Before a fresh model is trained,
per-species energy shifts are fitted by least squares (to the labels minus the model's fixed
short-range prior, which is what the network learns) and the descriptors are standardised on
the training set; a warm start keeps the earlier model's statistics and continues from its
weights (optionally with a small random perturbation, as the paper suggests for refinement).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import numpy as np
import torch
from ase import Atoms

from alcsp.potential.forces import energy_forces_stress, graph_for
from alcsp.potential.io import Labels, labels_of
from alcsp.potential.model import ACNN, ACNNConfig
from alcsp.potential.neighbours import PairList, pair_list, slot_vectors
from alcsp.structures import StructureBatch, validate_atoms
from alcsp.units import EV_PER_A3_IN_GPA

T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults follow the paper where it gives numbers."""

    steps: int = 100_000
    batch_size: int = 8  # structures per minibatch
    lr: float = 1e-3
    lr_decay: float = 0.97
    decay_every: int = 10_000
    weight_decay: float = 1e-5
    p_e: float = 1.0
    p_f: float = 1.0
    p_w: float = 0.1
    validation_fraction: float = 0.1
    eval_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "auto"  # descriptor kernels: auto | fused | torch
    perturb: float = 0.0  # relative weight noise on warm start
    # hull weighting (``hull_weights``): σ_w in eV/atom, 0 = every label weighs 1 (the paper)
    hull_weight_scale: float = 0.0
    hull_weight_floor: float = 0.1  # w_min, the weight of labels far above the hull
    # a campaign's labels more than this far above the hull of its labels are left out of
    # training (eV/atom; 0 = keep every label, the paper)
    max_e_hull: float = 0.0

    def __post_init__(self):
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.decay_every >= 1, "decay_every must be >= 1"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (min(self.p_e, self.p_f, self.p_w) >= 0, "p_e, p_f, p_w must be >= 0"),
            (self.p_e + self.p_f + self.p_w > 0, "at least one of p_e, p_f, p_w must be > 0"),
            (0 <= self.validation_fraction < 1, "validation_fraction must be in [0, 1)"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)}"),
            (self.backend in ("auto", "fused", "torch"), "backend must be auto, fused or torch"),
            (self.perturb >= 0, "perturb must be >= 0"),
            (
                math.isfinite(self.hull_weight_scale) and self.hull_weight_scale >= 0,
                "hull_weight_scale must be >= 0 eV/atom (0 = no weighting)",
            ),
            (0 < self.hull_weight_floor <= 1, "hull_weight_floor must be in (0, 1]"),
            (
                math.isfinite(self.max_e_hull) and self.max_e_hull >= 0,
                "max_e_hull must be >= 0 eV/atom (0 = train on every label)",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"TrainConfig.device={self.device!r} but CUDA is not available here")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown training settings {sorted(extra)}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class Metrics:
    """Errors on a set of structures: energy meV/atom, force meV/Å, stress GPa (RMSE)."""

    energy_mev_per_atom: float
    force_mev_per_a: float
    stress_gpa: float
    n_structures: int

    def __str__(self) -> str:
        return (
            f"RMSE energy {self.energy_mev_per_atom:.2f} meV/atom, "
            f"force {self.force_mev_per_a:.1f} meV/Å, stress {self.stress_gpa:.3f} GPa "
            f"({self.n_structures} structures)"
        )


@dataclass
class TrainReport:
    train: Metrics
    validation: Metrics | None
    steps: int
    seconds: float
    history: list[dict]

    def to_dict(self) -> dict:
        return {
            "train": asdict(self.train),
            "validation": asdict(self.validation) if self.validation else None,
            "steps": self.steps,
            "seconds": self.seconds,
        }


def hull_weights(e_hull: np.ndarray, scale: float, floor: float) -> np.ndarray:
    """Training weights [S] from each label's distance above the hull ``e_hull`` [S] eV/atom:
    max(floor, exp(−E_hull/scale)); NaN (no hull for that composition yet) weighs 1, and
    ``scale`` = 0 gives 1 everywhere."""
    e = np.asarray(e_hull, dtype=float)
    if scale == 0:
        return np.ones_like(e)
    w = np.maximum(floor, np.exp(-np.clip(e, 0.0, None) / scale))
    return np.where(np.isnan(e), 1.0, w)


@dataclass
class _Sample:
    atoms: Atoms
    labels: Labels
    pairs: PairList
    weight: float = 1.0


def _samples(
    structures: Sequence[Atoms], cutoff: float, weights: Sequence[float] | None = None
) -> list[_Sample]:
    out = []
    for k, atoms in enumerate(structures):
        validate_atoms(atoms, k)
        out.append(
            _Sample(
                atoms,
                labels_of(atoms, k),
                pair_list(atoms.positions, atoms.cell.array, cutoff),
                1.0 if weights is None else float(weights[k]),
            )
        )
    return out


def _collate(model: ACNN, samples: list[_Sample], dtype, device):
    batch = StructureBatch.from_atoms(
        [s.atoms for s in samples], dtype=dtype, device=device, validate=False
    )
    graph = graph_for(model, batch, pairs=[s.pairs for s in samples])
    t = dict(dtype=dtype, device=device)
    energy = torch.tensor([s.labels.energy for s in samples], **t)  # [S]
    forces = torch.as_tensor(np.concatenate([s.labels.forces for s in samples]), **t)  # [N, 3]
    has_stress = torch.tensor([s.labels.stress is not None for s in samples], device=device)
    stress = torch.as_tensor(
        np.stack(
            [s.labels.stress if s.labels.stress is not None else np.zeros((3, 3)) for s in samples]
        ),
        **t,
    )  # [S, 3, 3]
    return batch, graph, energy, forces, stress, has_stress


def _loss(model, samples, cfg: TrainConfig, dtype, device) -> torch.Tensor:
    batch, graph, e_ref, f_ref, s_ref, has_s = _collate(model, samples, dtype, device)
    out = energy_forces_stress(model, batch, graph, training=True, backend=cfg.backend)
    n = batch.n_atoms.to(dtype)  # [S]
    vol = batch.volume()  # [S]
    loss_e = (out.energy - e_ref) ** 2 / n
    df2 = ((out.forces - f_ref) ** 2).sum(1)  # [N]
    loss_f = torch.zeros_like(n).index_add(0, batch.batch, df2) / (3 * n)
    dw = (out.stress - s_ref) * vol.view(-1, 1, 1)  # virial difference, sign irrelevant
    loss_w = torch.where(has_s, (dw**2).sum((1, 2)) / (3 * n), torch.zeros_like(n))
    w = torch.tensor([s.weight for s in samples], dtype=dtype, device=device)  # [S]
    return (w * (cfg.p_e * loss_e + cfg.p_f * loss_f + cfg.p_w * loss_w)).mean()


def evaluate(
    model: ACNN,
    structures: Sequence[Atoms],
    batch_size: int = 16,
    backend: str = "auto",
) -> Metrics:
    """RMSE of ``model`` against the labels on ``structures``."""
    if not structures:
        raise ValueError("evaluate() needs at least one labelled structure")
    p = next(model.parameters())
    samples = _samples(structures, model.config.cutoff_radial)
    se_e, se_f, se_s, n_f, n_s = 0.0, 0.0, 0.0, 0, 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch, graph, e_ref, f_ref, s_ref, has_s = _collate(model, chunk, p.dtype, p.device)
        out = energy_forces_stress(model, batch, graph, backend=backend)
        n = batch.n_atoms.to(p.dtype)
        se_e += float((((out.energy - e_ref) / n) ** 2).sum())
        se_f += float(((out.forces - f_ref) ** 2).sum())
        n_f += 3 * int(f_ref.shape[0])
        if bool(has_s.any()):
            se_s += float(((out.stress - s_ref)[has_s] ** 2).sum())
            n_s += 9 * int(has_s.sum())
    return Metrics(
        energy_mev_per_atom=1000 * math.sqrt(se_e / len(samples)),
        force_mev_per_a=1000 * math.sqrt(se_f / n_f),
        stress_gpa=math.sqrt(se_s / n_s) * EV_PER_A3_IN_GPA if n_s else float("nan"),
        n_structures=len(samples),
    )


def prior_labels(
    model: ACNN, structures: Sequence[Atoms], chunk: int = 32
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fixed prior's energies [S] eV and forces (a list of [n_s, 3] eV/Å) on ``structures``
    (zeros when the model has none): what the network does not have to learn."""
    if model.repulsion is None:
        return np.zeros(len(structures)), [np.zeros((len(a), 3)) for a in structures]
    p = next(model.parameters())
    energies, forces = [], []
    for start in range(0, len(structures), chunk):
        batch = StructureBatch.from_atoms(
            list(structures[start : start + chunk]), dtype=p.dtype, device=p.device
        )
        graph = graph_for(model, batch)
        positions = batch.positions.detach().requires_grad_(True)  # [N, 3]
        with torch.enable_grad():
            moved = dataclasses.replace(batch, positions=positions)
            vec_a = slot_vectors(moved, graph, graph.angular)  # [N, Q, 3]
            atomic = model.repulsion_energy(vec_a, graph)  # [N]
            # no pair inside the prior's range: its energy does not depend on the positions
            grad = (
                torch.autograd.grad(atomic.sum(), positions, allow_unused=True)[0]
                if atomic.requires_grad
                else None
            )
        if grad is None:
            grad = torch.zeros_like(positions)
        atomic = atomic.detach()
        e = atomic.new_zeros(batch.n_structures).index_add(0, graph.atom_structure, atomic)  # [S]
        energies.append(e.cpu().double().numpy())
        f = (-grad).cpu().double().numpy()  # [N, 3]
        ptr = batch.ptr.cpu().numpy()
        forces += [f[ptr[k] : ptr[k + 1]] for k in range(batch.n_structures)]
    return np.concatenate(energies), forces


@torch.no_grad()
def fit_statistics(model: ACNN, structures: Sequence[Atoms], max_structures: int = 1000) -> None:
    """Fit per-species energy shifts and scale, and descriptor standardisation, in place.

    The shift and scale are fitted to what the network must learn, the labels minus the fixed
    prior (E_DFT − E_rep, F_DFT − F_rep): a structure with a close contact would otherwise
    put its tens of eV of ZBL energy into μ_Z and the scale.
    """
    t = model.n_species
    counts = np.zeros((len(structures), t))
    energies = np.zeros(len(structures))
    for k, atoms in enumerate(structures):
        idx = model.species_index(torch.as_tensor(atoms.numbers)).numpy()
        counts[k] = np.bincount(idx, minlength=t)
        energies[k] = labels_of(atoms, k).energy
    forces = [labels_of(s).forces for s in structures]
    if model.repulsion is not None:
        prior_e, prior_f = prior_labels(model, structures)
        energies = energies - prior_e
        forces = [f - g for f, g in zip(forces, prior_f, strict=True)]
    # Least squares E ≈ Σ_s n_s μ_s (tiny ridge so a species present in fixed ratio is defined).
    a = counts.T @ counts + 1e-8 * np.eye(t)
    mu = np.linalg.solve(a, counts.T @ energies)
    resid = (energies - counts @ mu) / counts.sum(1)
    scale = float(np.sqrt(np.mean(resid**2)))
    flat = np.concatenate([f.ravel() for f in forces])
    scale = max(scale, float(np.sqrt(np.mean(flat**2))) * 0.1, 1e-3)
    p = next(model.parameters())
    model.energy_shift.copy_(torch.as_tensor(mu, dtype=p.dtype))
    model.energy_scale.fill_(scale)
    # Descriptor mean/std over the atoms of (up to) max_structures structures.
    phis1, phis2 = [], []
    subset = list(structures)[:max_structures]
    for start in range(0, len(subset), 32):
        batch = StructureBatch.from_atoms(
            subset[start : start + 32], dtype=p.dtype, device=p.device
        )
        graph = graph_for(model, batch)
        phi1, phi2 = model.descriptor(graph.radial.vector, graph.angular.vector, graph)
        phis1.append(phi1)
        phis2.append(phi2)
    phi1, phi2 = torch.cat(phis1), torch.cat(phis2)
    model.phi1_mean.copy_(phi1.mean(0))
    model.phi1_std.copy_(
        phi1.std(0).clamp_min(1e-6) if len(phi1) > 1 else torch.ones_like(model.phi1_std)
    )
    model.phi2_mean.copy_(phi2.mean(0))
    model.phi2_std.copy_(
        phi2.std(0).clamp_min(1e-6) if len(phi2) > 1 else torch.ones_like(model.phi2_std)
    )


def split(structures: Sequence[T], fraction: float, rng: np.random.Generator):
    """Random train/validation split (validation gets round(fraction·n), at least 1 if > 0)."""
    n = len(structures)
    n_val = 0 if fraction == 0 else max(1, int(round(fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"{n} structures are too few for a validation fraction of {fraction}")
    order = rng.permutation(n)
    return [structures[i] for i in order[n_val:]], [structures[i] for i in order[:n_val]]


def train(
    structures: Sequence[Atoms],
    model: ACNN | ACNNConfig,
    config: TrainConfig = TrainConfig(),
    validation: Sequence[Atoms] | None = None,
    progress: Callable[[int, int, float, Metrics | None], None] | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[ACNN, TrainReport]:
    """Train on labelled ``structures`` (ASE Atoms with energy/forces[/stress] results).

    ``model``: an ``ACNNConfig`` for a fresh model, or an ``ACNN`` to warm-start from (it is
    copied, never modified). Without ``validation``, ``config.validation_fraction`` of the
    data is held out. ``progress(step, steps, loss, validation_metrics_or_None)`` is called
    every few steps. ``weights`` [S]: a loss weight per structure (``hull_weights``; None = 1
    each), normalised to a mean of 1 over the structures trained on; reported RMSEs are
    unweighted. Returns the trained model and a report with final RMSEs.
    """
    if len(structures) == 0:
        raise ValueError("no training structures given")
    if weights is not None:
        w_all = np.asarray(weights, dtype=float)
        if w_all.shape != (len(structures),) or not (np.isfinite(w_all).all() and w_all.min() > 0):
            raise ValueError(
                f"weights must be {len(structures)} finite positive numbers, one per structure"
            )
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    dtype, device = _DTYPES[config.dtype], torch.device(config.device)
    index = list(range(len(structures)))
    if validation is None:
        train_idx, valid_idx = split(index, config.validation_fraction, rng)
        valid_set = [structures[i] for i in valid_idx]
    else:
        train_idx, valid_set = index, list(validation)
    train_set = [structures[i] for i in train_idx]
    train_w = None if weights is None else w_all[train_idx] / w_all[train_idx].mean()
    if isinstance(model, ACNNConfig):
        net = ACNN(model).to(device=device, dtype=dtype)
        fit_statistics(net, train_set)
    else:
        net = copy.deepcopy(model).to(device=device, dtype=dtype)
        if config.perturb > 0:
            with torch.no_grad():
                for p in net.parameters():
                    noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                    p.add_(config.perturb * p.abs().mean() * noise)
    net.train()
    net.requires_grad_(True)
    samples = _samples(train_set, net.config.cutoff_radial, train_w)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(
        opt, step_size=config.decay_every, gamma=config.lr_decay
    )
    history: list[dict] = []
    t0 = time.perf_counter()
    order, cursor = rng.permutation(len(samples)), 0
    bs = min(config.batch_size, len(samples))
    for step in range(1, config.steps + 1):
        if cursor + bs > len(order):
            order, cursor = rng.permutation(len(samples)), 0
        chunk = [samples[i] for i in order[cursor : cursor + bs]]
        cursor += bs
        opt.zero_grad(set_to_none=True)
        loss = _loss(net, chunk, config, dtype, device)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} at step {step}; lower lr or check the labels"
            )
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        sched.step()
        val = None
        if valid_set and (step % config.eval_every == 0 or step == config.steps):
            val = evaluate(net, valid_set, backend=config.backend)
            history.append({"step": step, "loss": loss_value, **asdict(val)})
        if progress is not None and (step % 10 == 0 or val is not None or step == config.steps):
            progress(step, config.steps, loss_value, val)
    net.eval()
    report = TrainReport(
        train=evaluate(net, train_set, backend=config.backend),
        validation=evaluate(net, valid_set, backend=config.backend) if valid_set else None,
        steps=config.steps,
        seconds=time.perf_counter() - t0,
        history=history,
    )
    return net, report
