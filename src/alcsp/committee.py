"""A committee of ACNN models: members trained in parallel, and their disagreement.

Query by committee (DP-GEN's model deviation): several models trained on the same labels
from different seeds agree where the labels constrain them and drift apart elsewhere, so
their spread flags structures worth labelling. ``train_committee`` trains the members in
single-threaded worker processes; ``Committee.evaluate`` runs every member over batches of
structures (one shared neighbour graph per batch) and reports the members' mean energy and
enthalpy with the spreads:

    energy_std       [S] eV/atom   standard deviation of E^m / N over members (ddof = 0)
    force_deviation  [S] eV/Å      max_i sqrt( mean_m |F_i^m - <F_i>|² )   (DP-GEN max_devi_f)
    stress_std       [S] GPa       max over the 9 components of the std of sigma^m (max_devi_v)

Shape letters: M members, S structures, N atoms (all structures of a batch together).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms

from alcsp.execute import ProcessExecutor
from alcsp.potential.forces import ACNNPotential, energy_forces_stress, graph_for
from alcsp.potential.model import ACNN, ACNNConfig
from alcsp.potential.train import TrainConfig, TrainReport, train
from alcsp.structures import StructureBatch
from alcsp.units import GPA


@dataclass(frozen=True)
class CommitteeConfig:
    """How many members, how they start and how they are trained.

    ``perturb``: relative weight noise (TrainConfig.perturb) for members warm-started from
    the previous iteration's member (the paper's warm start); fresh members ignore it.
    ``steps``: training steps per member (0 = TrainConfig.steps). ``workers``: parallel
    training processes (0 = min(size, os.cpu_count())).
    """

    size: int = 4
    perturb: float = 0.05
    steps: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        def integer(name: str, low: int, fix: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(
                    f"CommitteeConfig.{name} must be an integer >= {low}, got {v!r}; {fix}"
                )

        integer("size", 2, "a committee needs at least 2 members to disagree (4 is typical).")
        integer("steps", 0, "use 0 for TrainConfig.steps, or the steps per member.")
        integer("workers", 0, "use 0 for min(size, CPU count), or the number of processes.")
        p = self.perturb
        if not isinstance(p, int | float) or isinstance(p, bool) or not np.isfinite(p) or p < 0:
            raise ValueError(
                f"CommitteeConfig.perturb must be a number >= 0, got {p!r}; "
                "0.05 (5 % relative weight noise) is the paper's warm start."
            )

    def n_workers(self) -> int:
        """Training processes to use: ``workers``, or min(size, CPU count) when 0."""
        return self.workers or min(self.size, os.cpu_count() or 1)

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """``base`` with this committee's steps (if set) and warm-start perturbation."""
        return replace(base, steps=self.steps or base.steps, perturb=float(self.perturb))


# -- training -----------------------------------------------------------------------------

#: A model as plain picklable data: its hyperparameters and its state dict as numpy arrays
#: (no torch tensors cross the process boundary, so no shared-memory handles either).
_Packed = tuple[dict, dict[str, np.ndarray]]


def _pack(model: ACNN) -> _Packed:
    return model.config.to_dict(), {
        k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
    }


def _unpack(packed: _Packed) -> ACNN:
    config, state = packed
    model = ACNN(ACNNConfig.from_dict(config))
    model = model.to(dtype=torch.from_numpy(state["energy_shift"]).dtype)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model


@dataclass(frozen=True)
class TrainJob:
    """One model to train in a worker process: from ``start`` (a fresh ``ACNNConfig``,
    whose own ``seed`` sets the initial weights, or an ``ACNN`` to continue from) with
    ``train`` (its ``seed`` sets minibatch order, validation split and warm-start noise)."""

    start: ACNN | ACNNConfig
    train: TrainConfig


@dataclass(frozen=True)
class _MemberJob:
    """One model's training, as sent to a worker process."""

    member: int
    data: list[Atoms]
    start: ACNNConfig | _Packed  # a fresh config or a packed model
    train: TrainConfig
    weights: tuple[float, ...] | None = None  # loss weight per structure of data
    progress_file: str | None = None  # where the worker writes "step steps" as it trains
    threads: int = 1  # torch threads in the worker


def _train_member(job: _MemberJob) -> tuple[_Packed, TrainReport]:
    """Worker-side: train one model, return it packed (module level, so it pickles)."""
    if job.threads > 1:  # the pool's initializer left one thread
        torch.set_num_threads(job.threads)
    start = job.start if isinstance(job.start, ACNNConfig) else _unpack(job.start)
    path = job.progress_file

    def progress(step: int, steps: int, loss: float, val: object) -> None:
        if path is not None:  # atomic, so the driver never reads half a line
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{step} {steps}")
            os.replace(tmp, path)

    model, report = train(job.data, start, job.train, weights=job.weights, progress=progress)
    return _pack(model), report


class TrainingFailed(RuntimeError):
    """A job of ``train_models`` raised ``error`` in its worker."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"model {index} failed to train: {type(error).__name__}: {error}")
        self.index = index
        self.error = error


#: progress(steps done over all models, steps of all models), called from a driver thread
TrainProgress = Callable[[int, int], None]


def train_models(
    data: list[Atoms],
    jobs: Sequence[TrainJob],
    workers: int,
    weights: Sequence[float] | np.ndarray | None = None,
    progress: TrainProgress | None = None,
    threads: int = 1,
) -> list[tuple[ACNN, TrainReport]]:
    """Train one model per job on ``data``, each in its own single-threaded worker process
    (``workers`` of them, at most one per job), so the driver only waits and the results
    depend on the jobs only, not on ``workers``. Returns (model, report) per job in order;
    a job whose training fails raises a RuntimeError naming it. ``progress`` is called
    about twice a second from a thread of this process with the training steps done over
    all jobs (the workers write theirs to files in a temporary directory). ``threads``:
    torch threads per worker (1 when the workers share the cores; a single job may take
    the driver's own ``torch.get_num_threads()``, so that it trains as fast as in the
    driver, and gives the same model)."""
    if not data:
        raise ValueError("train_models got no training structures.")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}.")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}.")
    w = None if weights is None else tuple(float(x) for x in weights)
    total = sum(j.train.steps for j in jobs)
    out: list[tuple[ACNN, TrainReport] | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="alcsp-train-") as tmp:
        files = [os.path.join(tmp, f"model-{m}") for m in range(len(jobs))]
        sent = []
        for m, job in enumerate(jobs):
            if isinstance(job.start, ACNNConfig):
                packed: ACNNConfig | _Packed = job.start
            elif isinstance(job.start, ACNN):
                packed = _pack(job.start)
            else:
                raise TypeError(
                    f"model {m}: start must be an ACNN or ACNNConfig, "
                    f"got {type(job.start).__name__}."
                )
            sent.append(_MemberJob(m, list(data), packed, job.train, w, files[m], threads))
        stop = threading.Event()

        def steps_done() -> int:
            done = 0
            for m, path in enumerate(files):
                if out[m] is not None:
                    done += jobs[m].train.steps
                    continue
                try:
                    with open(path) as f:
                        done += int(f.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
            return done

        def watch() -> None:
            while not stop.wait(0.5):
                assert progress is not None
                progress(steps_done(), total)

        watcher = threading.Thread(target=watch, daemon=True) if progress else None
        if watcher is not None:
            watcher.start()
        try:
            with ProcessExecutor(n_workers=min(workers, len(sent)), max_resubmits=0) as pool:
                for res in pool.map_unordered(_train_member, sent):
                    if res.error is not None:
                        raise TrainingFailed(res.index, res.error) from res.error
                    assert res.value is not None
                    packed_model, report = res.value
                    out[res.index] = (_unpack(packed_model), report)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
    if progress is not None:
        progress(total, total)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def member_job(start: ACNN | ACNNConfig, train: TrainConfig, seed: int) -> TrainJob:
    """A committee member's job: ``train`` with ``seed``; a fresh start also takes ``seed``
    as its ``ACNNConfig.seed``, so fresh members begin from different weights. A warm start
    (an ``ACNN``, not modified) continues from its weights with ``train.perturb`` noise (see
    ``CommitteeConfig.train_config``)."""
    if isinstance(start, ACNNConfig):
        start = replace(start, seed=int(seed))
    return TrainJob(start, replace(train, seed=int(seed)))


def train_committee(
    data: list[Atoms],
    starts: Sequence[ACNN | ACNNConfig],
    train: TrainConfig,
    seeds: Sequence[int],
    workers: int,
    weights: Sequence[float] | np.ndarray | None = None,
) -> list[tuple[ACNN, TrainReport]]:
    """Train one member per entry of ``starts`` on ``data``, in parallel processes.

    Member m trains with ``TrainConfig.seed = seeds[m]`` (``member_job``). Each member
    trains in its own single-threaded worker process (``workers`` of them; 0 = min(members,
    CPU count)), so the results depend on the seeds only, not on ``workers``. Returns
    (model, report) per member, in the order of ``starts``; a member whose training fails
    raises a RuntimeError naming it. ``weights``: the loss weight of each structure of
    ``data`` (``alcsp.potential.train.train``).
    """
    if len(starts) == 0:
        raise ValueError("train_committee needs at least one start (an ACNN or ACNNConfig).")
    if len(seeds) != len(starts):
        raise ValueError(
            f"train_committee got {len(seeds)} seeds for {len(starts)} starts; "
            "give one seed per member."
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(
            f"train_committee seeds must be distinct (got {list(seeds)}): "
            "members with equal seeds and starts would be identical."
        )
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = automatic), got {workers!r}.")
    if not data:
        raise ValueError("train_committee got no training structures.")
    for m, start in enumerate(starts):
        if not isinstance(start, ACNN | ACNNConfig):
            raise TypeError(
                f"committee member {m}: start must be an ACNN or ACNNConfig, "
                f"got {type(start).__name__}."
            )
    jobs = [member_job(st, train, sd) for st, sd in zip(starts, seeds, strict=True)]
    n_workers = workers or min(len(jobs), os.cpu_count() or 1)
    try:
        return train_models(data, jobs, n_workers, weights)
    except TrainingFailed as exc:
        k, err = exc.index, exc.error
        raise RuntimeError(
            f"committee member {k} (seed {seeds[k]}) failed to train: {type(err).__name__}: {err}"
        ) from err


# -- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CommitteeEvaluation:
    """The committee's view of S structures (numpy arrays, in the input order)."""

    energy: np.ndarray  # [S] eV/atom, member mean
    energy_std: np.ndarray  # [S] eV/atom, std over members (ddof = 0)
    enthalpy: np.ndarray  # [S] eV/atom, member mean of (E + P V) / N
    force_deviation: np.ndarray  # [S] eV/Å, max over atoms of the force deviation
    stress_std: np.ndarray  # [S] GPa, max over components of the stress std
    member_energy: np.ndarray  # [M, S] eV/atom, each member's energy


def _spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [M, ...] -> (mean [...], mean squared deviation [...]) over members (axis 0).

    Computed on the deviations from member 0, so identical members give exactly zero
    spread (and the mean is member 0's value exactly), with no cancellation otherwise.
    """
    d = x - x[0]  # [M, ...]
    shift = d.mean(axis=0)  # [...]
    return x[0] + shift, ((d - shift) ** 2).mean(axis=0)


class Committee:
    """Members that evaluate structures together (see the module docstring).

    All members must share species and cutoffs (one neighbour graph serves them all).
    ``dtype``/``device``/``backend`` as in ``ACNNPotential``; ``atoms_budget`` caps the
    atoms evaluated in one batch.
    """

    def __init__(
        self,
        models: Sequence[ACNN],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        backend: str = "auto",
        atoms_budget: int = 2048,
    ):
        if len(models) == 0:
            raise ValueError("a Committee needs at least one model.")
        keys = {(m.config.species, m.config.cutoff_radial, m.config.cutoff_angular) for m in models}
        if len(keys) != 1:
            raise ValueError(
                "committee members must share species and cutoffs, got "
                f"{sorted(keys)}; train them from one ACNNConfig."
            )
        if atoms_budget < 1:
            raise ValueError(f"atoms_budget must be >= 1, got {atoms_budget}.")
        # ACNNPotential makes private frozen copies in the evaluation dtype and device
        self.potentials = [
            ACNNPotential(m, device=device, dtype=dtype, backend=backend, skin=0.0) for m in models
        ]
        self.atoms_budget = atoms_budget

    @property
    def size(self) -> int:
        return len(self.potentials)

    def _chunks(self, counts: np.ndarray) -> list[range]:
        """Consecutive structure ranges of at most ``atoms_budget`` atoms (one at least)."""
        out, start, atoms = [], 0, 0
        for k, n in enumerate(counts.tolist()):
            if k > start and atoms + n > self.atoms_budget:
                out.append(range(start, k))
                start, atoms = k, 0
            atoms += n
        out.append(range(start, len(counts)))
        return out

    def evaluate(
        self, structures: Sequence[Atoms], pressure_gpa: float = 0.0
    ) -> CommitteeEvaluation:
        """Mean energy and enthalpy, and the members' spreads, of every structure."""
        structures = list(structures)
        if not structures:
            empty = np.zeros(0)
            return CommitteeEvaluation(empty, empty, empty, empty, empty, np.zeros((self.size, 0)))
        counts = np.array([len(a) for a in structures])
        first = self.potentials[0]
        parts: list[tuple[np.ndarray, ...]] = []
        for rows in self._chunks(counts):
            batch = StructureBatch.from_atoms(
                structures[rows.start : rows.stop], dtype=first.dtype, device=first.device
            )
            graph = graph_for(first.model, batch)
            energy, forces, stress = [], [], []
            for pot in self.potentials:
                out = energy_forces_stress(pot.model, batch, graph=graph, backend=pot.backend)
                energy.append(out.energy.cpu().double().numpy())  # [S]
                forces.append(out.forces.cpu().double().numpy())  # [N, 3]
                stress.append(out.stress.cpu().double().numpy())  # [S, 3, 3]
            parts.append(
                (
                    np.stack(energy),
                    np.stack(forces),
                    np.stack(stress),
                    batch.volume().cpu().double().numpy(),
                    batch.ptr.cpu().numpy(),
                )
            )
        e_tot = np.concatenate([p[0] for p in parts], axis=1)  # [M, S] eV
        volume = np.concatenate([p[3] for p in parts])  # [S] Å³
        e_pa = e_tot / counts  # [M, S] eV/atom
        e_mean, e_var = _spread(e_pa)
        s_mean, s_var = _spread(np.concatenate([p[2] for p in parts], axis=1))  # [S, 3, 3]
        del s_mean
        f_dev = []
        for _, member_forces, _, _, ptr in parts:
            _, f_var = _spread(member_forces)  # [N, 3]
            per_atom = np.sqrt(f_var.sum(axis=1))  # [N] eV/Å
            f_dev.append(np.maximum.reduceat(per_atom, ptr[:-1]))  # [S] (no empty structures)
        return CommitteeEvaluation(
            energy=e_mean,
            energy_std=np.sqrt(e_var),
            enthalpy=e_mean + pressure_gpa * GPA * volume / counts,
            force_deviation=np.concatenate(f_dev),
            stress_std=np.sqrt(s_var).reshape(-1, 9).max(axis=1) / GPA,
            member_energy=e_pa,
        )


def first_crossing(deviation: np.ndarray, threshold: float) -> int | None:
    """Index of the first frame whose ``deviation`` ([F]) exceeds ``threshold``, or None.

    A non-finite deviation (NaN, inf: a member blew up) counts as exceeding it.
    """
    d = np.asarray(deviation, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"deviation must be one value per frame (1-D), got shape {d.shape}.")
    over = np.flatnonzero(~(d <= threshold))
    return int(over[0]) if len(over) else None
