"""Search throughput with 1 and 2 (or more) workers: a campaign's shards through its executor.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_scaling.py runs/demo --iteration 2 \
        --workers 1,2 --repeats 3 --chunk 32

Takes a campaign directory, its model of ``--iteration`` and that iteration's random starts,
cuts them into shards of ``--chunk`` structures (``alcsp.search.ShardJob``) and relaxes all
of them with ``ProcessExecutor(n)`` for each n in ``--workers`` (and ``--dask`` for a Dask
LocalCluster of the largest n, ``--dask-profiler`` for one with Dask's profiler left on in
its workers, ``--slurm PARTITION`` for as many one-core Slurm batch jobs), interleaved over
``--repeats``. Prints structures per hour (median wall time of the repeats, the pool's
start-up included: a fresh pool each run, as a campaign iteration would reuse its pool this
is a lower bound) and the speed-up over 1 worker, with the summed CPU time the workers
reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from alcsp import execute
from alcsp.config import parse_config
from alcsp.execute import DaskConfig, DaskExecutor, ProcessExecutor
from alcsp.search import ShardJob, relax_shard
from alcsp.store import CampaignStore


def run(executor, jobs: list[ShardJob]) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    cpu, n = 0.0, 0
    for res in executor.map_unordered(relax_shard, jobs):
        if not res.ok:
            raise RuntimeError(f"shard {res.index} failed: {res.error}")
        cpu += res.value.cpu_seconds
        n += len(res.value.results)
    return time.perf_counter() - t0, cpu, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--dask", action="store_true", help="also a Dask LocalCluster")
    ap.add_argument(
        "--dask-profiler",
        action="store_true",
        help="also a Dask LocalCluster with Dask's profiler on in the workers (as alcsp ran "
        "them before it switched the profiler off)",
    )
    ap.add_argument(
        "--slurm",
        default="",
        help="also Dask workers in Slurm batch jobs of this partition, one core each (a "
        "running cluster: scripts/slurm.sh start)",
    )
    ap.add_argument(
        "--times",
        type=int,
        default=1,
        help="relax the starts this many times "
        "over (a longer run, so the pool's start-up matters less)",
    )
    args = ap.parse_args()
    with CampaignStore.open(args.directory, readonly=True) as store:
        cfg = parse_config(store.config_text)
        rec = [r for r in store.models() if r.iteration == args.iteration]
        model = str(store.model_path(rec[-1]).resolve())
        starts = store.get_atoms(store.structure_ids(origin="random", iteration=args.iteration))
    jobs = [
        ShardJob(
            model,
            tuple(starts[k : k + args.chunk]),
            cfg.campaign.pressure,
            cfg.relax,
            cfg.dedup.fingerprint,
        )
        for k in range(0, len(starts), args.chunk)
    ] * args.times
    counts = [int(w) for w in args.workers.split(",")]
    kinds = [f"process {n}" for n in counts] + ([f"dask {max(counts)}"] if args.dask else [])
    kinds += [f"dask+profiler {max(counts)}"] if args.dask_profiler else []
    kinds += [f"slurm {max(counts)}"] if args.slurm else []
    no_profiler = execute.WORKER_DASK_CONFIG
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:  # interleaved
            name, n = kind.split()
            if name == "process":
                ex = ProcessExecutor(int(n))
            elif name.startswith("dask"):
                # the profiler is on unless alcsp's worker config switches it off
                execute.WORKER_DASK_CONFIG = {} if name == "dask+profiler" else no_profiler
                ex = DaskExecutor(DaskConfig(cluster="local", workers=int(n)))
            else:  # n one-core batch jobs; their queueing and start-up count
                slurm = DaskConfig(
                    cluster="slurm",
                    queue=args.slurm,
                    jobs=int(n),
                    cores=1,
                    memory="2GB",
                    walltime="00:30:00",
                    job_extra_directives=("--output=/tmp/alcsp-search-scaling-%j.out",),
                )
                ex = DaskExecutor(slurm)
            with ex:
                w, c, done = run(ex, jobs)
            wall[kind].append(w)
            cpu[kind].append(c)
    total = len(starts) * args.times
    print(
        f"{total} structures in {len(jobs)} shards of {args.chunk}, model "
        f"{Path(model).name}, {cfg.campaign.pressure} GPa"
    )
    base = statistics.median(wall[kinds[0]])
    for kind in kinds:
        w = statistics.median(wall[kind])
        print(
            f"{kind:17s}: wall {w:7.2f} s  {3600 * total / w:9.0f} structures/h  "
            f"x{base / w:.2f}  (worker CPU {statistics.median(cpu[kind]):.2f} s)"
        )


if __name__ == "__main__":
    main()
