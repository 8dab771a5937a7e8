"""One shard of a campaign's ACNN search, as a job any executor can run.

A campaign's search relaxes its random structures in fixed chunks ("shards"). Each shard is
a ``ShardJob`` — the structures, the model file, the pressure and the relaxation settings —
and ``relax_shard`` turns it into a ``ShardResult``: the relaxations and the fingerprints of
their end geometries, with the time spent. A shard of random structures carries no
structures, only a ``GenerateSpec`` (the cell compositions and a seed): the worker builds
them itself (``generate_shard``) and returns them with their relaxations, so that
generation runs on every worker as the relaxations do and the driver sends a few bytes per
shard. The seed is (campaign seed, iteration, stage, shard), so the structures do not
depend on the worker that builds them. ``relax_shard`` is a module-level function of picklable
arguments, so the campaign's executor runs shards inline, in its process pool or on a Dask
cluster (Slurm, PBS) exactly as it runs oracle jobs. The campaign stores shard results in
shard order and checks B_max between them, so what is stored does not depend on how many
workers there are or in which order they finish.

Workers load the model file once per process (``_model``, a cache keyed by the file's path,
size and modification time: a file rewritten by a later iteration is loaded again).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from alcsp.dedup import FingerprintConfig, fingerprint
from alcsp.generate import GenerateConfig, GenerationFailure, StructureGenerator
from alcsp.potential import ACNNPotential, load_model
from alcsp.potential.model import ACNN
from alcsp.relax.config import RelaxConfig
from alcsp.relax.runner import RelaxResult, relax_structures
from alcsp.vocab import composition_key

__all__ = [
    "GenerateSpec",
    "ShardJob",
    "ShardResult",
    "generate_shard",
    "relax_shard",
    "relaxed_fingerprint",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class GenerateSpec:
    """The random structures of one shard, for the worker to build: one structure per entry
    of ``cells`` (a cell composition such as ``"Cu2Au2"``), in that order of compositions,
    from ``numpy.random.default_rng(seed)``; ``volumes``: start volume per atom (Å³) by
    composition key, where the campaign has a hint."""

    cells: tuple[str, ...]
    config: GenerateConfig
    seed: tuple[int, ...]  # (campaign seed, iteration, stage, shard)
    volumes: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ShardJob:
    """Relax ``structures`` (or the ones ``generate`` describes) with the model in
    ``model_path`` at ``pressure`` GPa."""

    model_path: str  # absolute: workers may run elsewhere (a shared file system)
    structures: tuple[Atoms, ...]
    pressure: float  # GPa
    relax: RelaxConfig
    fingerprint: FingerprintConfig
    dtype: str = "float64"  # of the potential: "float64" | "float32"
    generate: GenerateSpec | None = None  # build the structures on the worker instead

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"ShardJob.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.generate is not None and self.structures:
            raise ValueError("a ShardJob has either structures or a GenerateSpec, not both")


@dataclass(frozen=True)
class ShardResult:
    """The relaxations of one shard, in its input order."""

    results: tuple[RelaxResult, ...]
    fingerprints: tuple[np.ndarray | None, ...]  # of each end geometry (None: too broken)
    wall_seconds: float
    cpu_seconds: float  # of the process that ran it (time.process_time)
    worker: str  # host:pid that ran it
    # a generated shard: its start structures (aligned with results) and what failed
    generated: tuple[Atoms, ...] | None = None
    failures: tuple[GenerationFailure, ...] = ()


#: One generator per configuration and worker process: it caches which space groups fit
#: each cell composition (GenerateConfig holds a dict, so it is keyed by its repr).
_GENERATORS: dict[str, StructureGenerator] = {}


def generate_shard(spec: GenerateSpec) -> tuple[list[Atoms], list[GenerationFailure]]:
    """The shard's random structures (grouped by cell composition in the order of first
    appearance in ``spec.cells``) and the failures, with reasons. Deterministic in
    ``spec``: the same on any worker."""
    key = repr(spec.config)
    gen = _GENERATORS.get(key)
    if gen is None:
        gen = _GENERATORS[key] = StructureGenerator(spec.config)
    rng = np.random.default_rng(list(spec.seed))
    wanted: dict[str, int] = {}
    for cell in spec.cells:
        wanted[cell] = wanted.get(cell, 0) + 1
    hints = dict(spec.volumes)
    structures: list[Atoms] = []
    failures: list[GenerationFailure] = []
    for cell, n in wanted.items():
        made = gen.generate(cell, n, rng, volume_per_atom=hints.get(composition_key(cell)))
        structures += made.structures
        failures += made.failures
    return structures, failures


@functools.lru_cache(maxsize=4)
def _model(path: str, size: int, mtime_ns: int) -> ACNN:
    del size, mtime_ns  # part of the cache key only
    return load_model(path)


def relaxed_fingerprint(atoms: Atoms, config: FingerprintConfig) -> np.ndarray | None:
    """Fingerprint of a relaxed structure; None for a geometry too broken to describe
    (non-finite positions or a degenerate cell, which only unphysical outcomes have)."""
    if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell.array))):
        return None
    if abs(atoms.get_volume()) < 1e-3 * len(atoms):
        return None
    return fingerprint(atoms, config)


def relax_shard(job: ShardJob) -> ShardResult:
    """Relax one shard (run by an executor's worker, or inline)."""
    t0, c0 = time.perf_counter(), time.process_time()
    st = os.stat(job.model_path)
    model = _model(job.model_path, st.st_size, st.st_mtime_ns)
    potential = ACNNPotential(model, dtype=_DTYPES[job.dtype])
    failures: list[GenerationFailure] = []
    if job.generate is not None:
        structures, failures = generate_shard(job.generate)
        starts = tuple(a.copy() for a in structures)  # the starts as generated, kept apart
    else:
        structures = list(job.structures)
    results = relax_structures(structures, potential, job.pressure, job.relax)
    fps = tuple(relaxed_fingerprint(r.atoms, job.fingerprint) for r in results)
    return ShardResult(
        results=tuple(results),
        fingerprints=fps,
        wall_seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        worker=f"{os.uname().nodename}:{os.getpid()}",
        generated=starts if job.generate is not None else None,
        failures=tuple(failures),
    )
