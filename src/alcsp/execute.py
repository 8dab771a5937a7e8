"""Run independent jobs (oracle calls, relaxation shards) here, in local processes, or on a
Dask cluster (local, an existing scheduler, or Slurm/PBS through dask-jobqueue).

Every executor offers ``map_unordered(fn, items)``, yielding a ``TaskResult`` per item as
it completes (in completion order, with the item's index), with either the value or the
exception the job raised: one failed job never stops the others. ``fn`` and the items
must be picklable for the process and Dask executors (module-level functions,
``functools.partial`` of them).

Workers run one thread each (OMP/MKL/OpenBLAS and torch): two BLAS threads per process
slow down badly when cores are shared (docs/benchmarks.md, one thread per worker).

Workers die with their driver (Linux): a process-pool worker gets a parent-death signal
and watches the driver's PID, so a ``kill -9`` of the driver leaves no worker behind (nor,
through the job's own parent-death signal, any isolated oracle job: see
``alcsp.oracle._job``). A Dask ``LocalCluster``'s processes go with the driver by Dask's
own design (each nanny and worker exits when the pipe from its parent closes). Slurm/PBS
workers (dask-jobqueue) lose their scheduler, which lives in the driver, and exit (at the
latest after dask-jobqueue's ``death-timeout``, 60 s by default), their isolated oracle jobs
with them, and so their batch jobs end: on the test cluster 3 s after a ``kill -9`` of the
driver (``tests/test_slurm.py``). Workers of an external
scheduler (``cluster = "address"``) are not the campaign's: a task they are running
finishes and its result is dropped with the driver's futures.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerLost(RuntimeError):
    """The process running a job died (segfault, out of memory, killed) too many times."""


@dataclass(frozen=True)
class TaskResult(Generic[R]):
    """The outcome of ``fn(items[index])``: ``value`` or the ``error`` it raised."""

    index: int
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Generator[TaskResult[R], None, None]: ...

    def close(self) -> None: ...


def single_thread_worker_init() -> None:
    """Initializer of worker processes: one BLAS/OpenMP thread and one torch thread.

    Changes only the worker process it runs in (never call it in the driver).
    """
    for var in THREAD_ENV:
        os.environ[var] = "1"
    # Imported only if the worker has it already; otherwise the environment above makes
    # torch start with one thread when a job imports it.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``); False where that is not available.

    The kernel fires it when the *thread* that created this process exits, not only its
    process: set it only in a process started by a thread that outlives it (a main
    thread, or the thread that waits for it).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def exit_with(pid: int, pdeathsig: bool = True) -> None:
    """Make this process SIGKILL itself as soon as process ``pid`` (its driver) dies.

    A daemon thread waits on the driver's pidfd (or polls its PID where pidfds are
    missing). A parent-death signal alone is not enough: a forkserver worker's parent is
    the forkserver, which exits only when every holder of its "alive" pipe has closed it,
    and each worker holds it (so that it could start processes itself): driver dead,
    forkserver and workers would wait for each other forever. ``pdeathsig`` adds a
    parent-death SIGKILL (kernel-side, instant when the parent dies; see
    ``set_parent_death_signal`` for when that is safe).
    """
    if pdeathsig:
        set_parent_death_signal(signal.SIGKILL)
    fd: int | None = None
    try:
        fd = os.pidfd_open(pid)  # Linux >= 5.3: readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if not _alive(pid):  # died before the watch began (fork and exec take a while)
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _alive(pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="alcsp-exit-with-driver", daemon=True).start()


def process_worker_init(driver_pid: int, pdeathsig: bool) -> None:
    """Initializer of ``ProcessExecutor`` workers: one thread each, and death with the
    driver (``exit_with``)."""
    single_thread_worker_init()
    exit_with(driver_pid, pdeathsig)


class InlineExecutor:
    """Runs jobs one after another in this process (debugging, tiny oracles)."""

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Generator[TaskResult[R], None, None]:
        for k, item in enumerate(items):
            try:
                yield TaskResult(k, fn(item))
            except Exception as exc:  # recorded, never fatal to the other jobs
                yield TaskResult(k, error=exc)

    def close(self) -> None:
        pass

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcessExecutor:
    """A pool of single-threaded worker processes on this machine.

    If a worker dies (segfault, OOM kill), the pool is rebuilt and the jobs that were in
    flight are run again one at a time; a job whose worker dies while it runs alone is
    sent again at most ``max_resubmits`` times, then reported as ``WorkerLost``. Jobs
    must therefore be idempotent (``label_structures`` is).
    At most ``window`` jobs (default 4 × workers) are in flight at once. The workers die
    with the process that made the pool (``exit_with``), however it dies.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        max_resubmits: int = 1,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        window: int | None = None,
    ):
        self.n_workers = n_workers or os.cpu_count() or 1
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start method {start_method!r} is not available here; use "
                f"one of {multiprocessing.get_all_start_methods()}"
            )
        self.max_resubmits = max_resubmits
        self.start_method = start_method
        self.window = window or 4 * self.n_workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            # A forkserver worker's parent is the forkserver (one thread, and it exits when
            # this process does); a spawned worker's parent is the thread that submits, in
            # this process: its death signal is safe only if that is the main thread.
            pdeathsig = (
                self.start_method == "forkserver"
                or threading.current_thread() is threading.main_thread()
            )
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.n_workers,
                mp_context=multiprocessing.get_context(self.start_method),
                initializer=process_worker_init,
                initargs=(os.getpid(), pdeathsig),
            )
        return self._pool

    def _drop_pool(self, broken: bool = False) -> None:
        if self._pool is None:
            return
        if broken:
            # A broken pool's manager thread SIGTERMs the surviving workers and joins them;
            # a worker that was still starting up (forkserver) can outlive that, and then
            # shutdown(wait=True) waits forever (seen once in CI, test_execute's dying
            # workers: manager thread in join, worker blocked reading its start-up pipe).
            # SIGKILL whatever is left first; the executor keeps its workers in the private
            # ``_processes`` dict, the only handle concurrent.futures gives on them.
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Generator[TaskResult[R], None, None]:
        todo = list(range(len(items)))[::-1]  # stack of indices not yet sent
        suspects: deque[int] = deque()  # in flight when a worker died: rerun one at a time
        deaths = [0] * len(items)  # times a job's worker died while it ran alone
        running: dict[cf.Future, int] = {}
        try:
            while todo or suspects or running:
                solo = False
                if not running and suspects:
                    k = suspects.popleft()
                    running[self._get_pool().submit(fn, items[k])] = k
                    solo = True
                elif not suspects:
                    while todo and len(running) < self.window:
                        k = todo.pop()
                        try:
                            running[self._get_pool().submit(fn, items[k])] = k
                        except BrokenProcessPool:
                            todo.append(k)
                            break
                if not running:
                    self._drop_pool(broken=True)  # broken at submission: start a fresh pool
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                broken: BaseException | None = None
                for fut in done:
                    k = running.pop(fut)
                    exc = fut.exception()
                    if isinstance(exc, BrokenProcessPool):
                        broken = exc
                        if solo:  # it ran alone: this job killed its worker
                            deaths[k] += 1
                            if deaths[k] > self.max_resubmits:
                                yield TaskResult(
                                    k,
                                    error=WorkerLost(
                                        f"the worker process died {deaths[k]} times while "
                                        f"running this job alone ({exc})"
                                    ),
                                )
                            else:
                                suspects.appendleft(k)
                        else:
                            suspects.append(k)
                    elif exc is not None:
                        yield TaskResult(k, error=exc)
                    else:
                        yield TaskResult(k, fut.result())
                if broken is not None:
                    # The pool is gone and every job in flight with it. Which one killed
                    # the worker is unknown: rerun each alone, so no innocent job is lost.
                    suspects.extend(running.values())
                    running.clear()
                    self._drop_pool(broken=True)
        finally:
            if running:  # the caller stopped early: do not leave work behind
                self._drop_pool()

    def close(self) -> None:
        self._drop_pool()

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- Dask ---------------------------------------------------------------------------------

ClusterKind = Literal["local", "address", "slurm", "pbs"]


@dataclass(frozen=True)
class DaskConfig:
    """Where the Dask workers come from.

    local: a ``LocalCluster`` of ``workers`` single-threaded processes (or threads with
    ``processes=False``). address: connect to a running scheduler (``address``).
    slurm/pbs: ``jobs`` batch jobs from dask-jobqueue, each with ``cores`` single-threaded
    worker processes, ``memory`` and ``walltime`` per job, in ``queue``. Their workers retire
    shortly before the walltime and ended jobs are replaced, so a campaign may outlive any
    one job (see docs/cluster.md).
    """

    cluster: ClusterKind = "local"
    workers: int = 2
    processes: bool = True
    address: str = ""
    queue: str = ""
    account: str = ""
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "01:00:00"
    jobs: int = 1
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()  # e.g. "module load gpaw"
    local_directory: str = ""
    python: str = ""  # the Python on the compute nodes; "" = this one

    def __post_init__(self):
        if self.cluster not in ("local", "address", "slurm", "pbs"):
            raise ValueError(
                f"[executor.dask] cluster = {self.cluster!r}: choose local, address, slurm or pbs"
            )
        if self.cluster == "address" and not self.address:
            raise ValueError(
                "[executor.dask] cluster = 'address' needs address = "
                "'tcp://host:8786' of a running scheduler"
            )
        if self.cluster in ("slurm", "pbs"):
            if not self.queue:
                raise ValueError(
                    f"[executor.dask] cluster = {self.cluster!r} needs queue = "
                    "the partition/queue name"
                )
            if self.cores < 1 or self.jobs < 1:
                raise ValueError(
                    f"[executor.dask] cores ({self.cores}) and jobs ({self.jobs}) must be >= 1"
                )
        if self.workers < 1:
            raise ValueError(f"[executor.dask] workers must be >= 1, got {self.workers}")


# Dask's statistical profiler samples every worker's task thread 100 times a second (to
# draw the dashboard's flame graph, which a campaign never shows). With the campaign's
# single-threaded workers it cost 2-11 % more worker CPU on the same relaxations
# (benchmarks/search_scaling.py, docs/benchmarks.md), so alcsp's own clusters run without it.
# (a dotted key: the Nanny merges it into the worker's whole config, where a nested dict
# would replace the whole "distributed" section)
WORKER_DASK_CONFIG = {"distributed.worker.profile.enabled": False}
NO_PROFILER_ENV = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"


def _one_thread_prologue() -> list[str]:
    return [f"export {v}=1" for v in THREAD_ENV] + [f"export {NO_PROFILER_ENV}=False"]


def walltime_seconds(walltime: str) -> int | None:
    """Seconds of a Slurm/PBS walltime ("MM", "MM:SS", "HH:MM:SS", "D-HH[:MM[:SS]]");
    None if it is not one of those forms."""
    days, _, rest = walltime.strip().rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        d = int(days) if days else 0
    except ValueError:
        return None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        if not 1 <= len(parts) <= 3:
            return None
        parts = parts + [0] * (3 - len(parts))
    elif len(parts) == 1:  # minutes
        parts = [0, parts[0], 0]
    elif len(parts) == 2:  # MM:SS
        parts = [0, *parts]
    elif len(parts) != 3:
        return None
    h, m, sec = parts
    return ((d * 24 + h) * 60 + m) * 60 + sec


def worker_lifetime_args(walltime: str) -> list[str]:
    """``--lifetime`` arguments that make a batch job's workers retire gracefully before the
    job's walltime (their tasks move to other workers without counting as failures; the
    executor's ``adapt`` then submits a fresh job). [] for an unparsable walltime."""
    total = walltime_seconds(walltime)
    if total is None:
        return []
    margin = min(600, max(30, total // 10))
    if total - margin < 30:
        return []
    return ["--lifetime", f"{total - margin}s", "--lifetime-stagger", f"{margin // 3}s"]


def make_dask_cluster(cfg: DaskConfig) -> Any:
    """The cluster object for ``cfg`` (not started for slurm/pbs until scaled); None for
    ``address``."""
    if cfg.cluster == "address":
        return None
    if cfg.cluster == "local":
        from distributed import LocalCluster

        # worker processes (a Nanny each) take their config from ``config``; threads in
        # this process share the driver's config, which is left alone
        nanny = {"config": WORKER_DASK_CONFIG} if cfg.processes else {}
        return LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=1,
            processes=cfg.processes,
            dashboard_address=None,
            local_directory=cfg.local_directory or None,
            **nanny,
        )
    common: dict[str, Any] = dict(
        queue=cfg.queue,
        cores=cfg.cores,
        processes=cfg.cores,  # one single-threaded worker process per core
        memory=cfg.memory,
        walltime=cfg.walltime,
        job_extra_directives=list(cfg.job_extra_directives),
        job_script_prologue=_one_thread_prologue() + list(cfg.job_script_prologue),
        worker_extra_args=worker_lifetime_args(cfg.walltime),
    )
    if cfg.account:
        common["account"] = cfg.account
    if cfg.local_directory:
        common["local_directory"] = cfg.local_directory
    if cfg.python:
        common["python"] = cfg.python
    if cfg.cluster == "slurm":
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(**common)
    from dask_jobqueue import PBSCluster

    return PBSCluster(**common)


class _SingleThreadPlugin:
    """Dask worker plugin running ``single_thread_worker_init`` on every worker process,
    including workers that join later."""

    name = "alcsp-single-thread"

    def setup(self, worker: Any) -> None:
        single_thread_worker_init()

    def teardown(self, worker: Any) -> None:
        pass


class DaskExecutor:
    """Jobs on Dask distributed. The cluster starts on first use and stops on ``close``.

    A worker that dies is handled by Dask itself (its tasks are rescheduled; after
    ``distributed.scheduler.allowed-failures`` deaths a task fails with ``KilledWorker``).
    """

    def __init__(self, config: DaskConfig = DaskConfig()):
        self.config = config
        self._cluster: Any = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from distributed import Client, WorkerPlugin

            cfg = self.config
            self._cluster = make_dask_cluster(cfg)
            if cfg.cluster in ("slurm", "pbs"):
                # adapt, not scale: a job that ends (walltime, preemption, node failure) is
                # replaced; after scale() the campaign would wait for workers forever.
                self._cluster.adapt(minimum_jobs=cfg.jobs, maximum_jobs=cfg.jobs)
            self._client = Client(cfg.address if self._cluster is None else self._cluster)
            # Threads in this process (processes=False) share the driver: leave its
            # thread settings alone.
            if not (cfg.cluster == "local" and not cfg.processes):
                plugin = type("SingleThreadPlugin", (_SingleThreadPlugin, WorkerPlugin), {})
                self._client.register_plugin(plugin())
        return self._client

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Generator[TaskResult[R], None, None]:
        from distributed import as_completed

        client = self.client
        futures = {client.submit(fn, item, pure=False): k for k, item in enumerate(items)}
        try:
            for fut in as_completed(futures):
                k = futures[fut]
                if fut.status == "finished":
                    yield TaskResult(k, fut.result())
                else:
                    try:
                        exc = fut.exception()
                    except Exception as e:  # cancelled or lost
                        exc = e
                    yield TaskResult(
                        k,
                        error=exc
                        if isinstance(exc, BaseException)
                        else RuntimeError(f"task ended as {fut.status}"),
                    )
                fut.release()
        finally:
            client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorConfig:
    """The ``[executor]`` table: ``kind`` = inline | process | dask.

    process: ``workers`` single-threaded processes (0 = one per core).
    dask: see ``DaskConfig`` (``dask`` sub-table).
    """

    kind: Literal["inline", "process", "dask"] = "process"
    workers: int = 0
    max_resubmits: int = 1
    dask: DaskConfig = field(default_factory=DaskConfig)

    def __post_init__(self):
        if self.kind not in ("inline", "process", "dask"):
            raise ValueError(f"[executor] kind = {self.kind!r}: choose inline, process or dask")
        if self.workers < 0:
            raise ValueError(
                f"[executor] workers must be >= 0 (0 = one per core), got {self.workers}"
            )
        if self.max_resubmits < 0:
            raise ValueError(f"[executor] max_resubmits must be >= 0, got {self.max_resubmits}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecutorConfig:
        """Build from a parsed TOML table, naming unknown keys."""
        import dataclasses

        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"[executor] has unknown keys {unknown}; known: {sorted(known)}")
        if "dask" in d:
            dd = dict(d["dask"])
            dknown = {f.name for f in dataclasses.fields(DaskConfig)}
            bad = sorted(set(dd) - dknown)
            if bad:
                raise ValueError(f"[executor.dask] has unknown keys {bad}; known: {sorted(dknown)}")
            for key in ("job_extra_directives", "job_script_prologue"):
                if key in dd:
                    dd[key] = tuple(dd[key])
            d["dask"] = DaskConfig(**dd)
        return cls(**d)


def make_executor(config: ExecutorConfig) -> InlineExecutor | ProcessExecutor | DaskExecutor:
    """The executor described by ``config`` (close it when done, or use ``with``)."""
    if config.kind == "inline":
        return InlineExecutor()
    if config.kind == "process":
        return ProcessExecutor(config.workers or None, max_resubmits=config.max_resubmits)
    return DaskExecutor(config.dask)
