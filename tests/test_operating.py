"""Operating a campaign safely (issue 16, item 1), with EMT:

* a ``kill -9`` of ``alcsp run`` takes its pool workers and isolated oracle jobs (and the
  jobs' own children) with it;
* one run per campaign directory: a second run refuses naming the first, a killed run's
  lock is free at once; ``alcsp status`` says which;
* creating a campaign is atomic: a kill at any moment leaves no campaign or a whole one,
  two creates at once give one campaign and one clear error, and a directory left by an
  older alcsp's killed create is refused in one line.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from alcsp.cli import main
from alcsp.lock import LOCK_NAME, CampaignBusy, DirectoryLock, holder, recorded_holder
from alcsp.store import DB_NAME, CampaignDirError, CampaignStore

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signals and /proc are Linux's"
)

CONFIG = """
[campaign]
name = "ops"
seed = 7
max_iterations = 1
initial_structures = 12

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2
max_cell_atoms = 4

[oracle]
name = "emt"
{oracle}

[executor]
kind = "{executor}"
workers = 2
"""
REFERENCES = '\n[references]\nprototypes = { Cu = ["fcc", "bcc"], Au = ["fcc"] }\n'


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


# ------------------------------------------------------------------ processes via /proc


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: pid -> start time (which tells a reused pid)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children.setdefault(st[0], []).append(int(name))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if (st := _stat(pid)) is not None:
                found[pid] = st[2]
                todo.append(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int, started: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == started and st[1] not in "ZX"  # a zombie is dead


def _tagged(tag: str) -> set[int]:
    """Live processes whose environment carries ``tag`` (every descendant inherits it,
    also one started after the last look at the tree)."""
    needle = f"ALCSP_TEST_TAG={tag}".encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{name}/environ").read_bytes():
                st = _stat(int(name))
                if st is not None and st[1] not in "ZX":
                    found.add(int(name))
        except OSError:
            pass
    return found


def _wait_gone(procs: dict[int, int], tag: str, limit: float = 5.0) -> list[str]:
    """Wait until none of ``procs`` and no tagged process lives; the survivors."""
    deadline = time.monotonic() + limit
    while True:
        left = {p for p, t in procs.items() if _alive(p, t)} | _tagged(tag)
        if not left or time.monotonic() > deadline:
            return [f"{p}: {_cmdline(p)[:120]}" for p in sorted(left)]
        time.sleep(0.05)


def _kill_tagged(tag: str) -> None:
    """Clean up after a failed test: nothing of it may outlive it."""
    for pid in _tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------ 1. workers die


def _start_run(
    tmp_path: Path, tag: str, text: str | None = None, **popen: object
) -> tuple[subprocess.Popen, Path]:
    """``alcsp run`` of ``text`` (default CONFIG: process pool of 2, isolated EMT jobs) in
    its own session, every process of it tagged with ``tag``; the process and the campaign
    directory."""
    config = tmp_path / "ops.toml"
    config.write_text(text or CONFIG.format(oracle="isolate = true", executor="process"))
    directory = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alcsp.cli", "run", str(config), "--dir", str(directory), "--quiet"],
        env=_env(ALCSP_TEST_TAG=tag),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,  # type: ignore[call-overload]
    )
    return proc, directory


def _until_a_job_runs(proc: subprocess.Popen, seen: dict[int, int], limit: float = 120) -> None:
    """Wait until an isolated oracle job runs below ``proc``, recording in ``seen`` every
    process seen below it."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        now = _descendants(proc.pid)
        seen.update(now)
        if any("alcsp.oracle._job" in _cmdline(p) for p in now):
            return
        time.sleep(0.01)
    err = proc.stderr.read()[-2000:] if proc.stderr else ""
    raise AssertionError(f"no oracle job running; exit {proc.poll()}: {err}")


def test_killing_alcsp_run_kills_its_workers_and_jobs(tmp_path, capsys):
    """A real ``alcsp run`` (process pool of 2, isolated EMT jobs) SIGKILLed while it
    labels: within seconds no process it started is left. While it ran, it held the lock
    (a second run refused naming it, status said running); after the kill the lock is
    free."""
    tag = uuid.uuid4().hex
    proc, directory = _start_run(tmp_path, tag)
    seen: dict[int, int] = {}  # every process seen below the driver

    try:
        _until_a_job_runs(proc, seen)
        who = holder(directory)
        assert who is not None and who.pid == proc.pid
        capsys.readouterr()
        assert main(["run", str(directory), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {proc.pid} on {who.host}" in err and len(err.splitlines()) == 1, err
        assert main(["status", str(directory)]) == 0
        assert f"running (pid {proc.pid} on" in capsys.readouterr().out

        _until_a_job_runs(
            proc, seen
        )  # kill while a job runs: its worker is busy, the other may idle
        workers = [p for p in seen if "multiprocessing" in _cmdline(p)]
        assert len(workers) >= 2, [_cmdline(p) for p in seen]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = _wait_gone(seen, tag)
        assert not left, f"still alive after the driver's death: {left}"
    finally:
        proc.kill()
        proc.wait()
        _kill_tagged(tag)

    assert holder(directory) is None
    assert main(["status", str(directory)]) == 0
    assert "not running" in capsys.readouterr().out
    with DirectoryLock.acquire(directory):  # taken over
        pass


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_alcsp_run_in_one_line_and_leaves_nothing_running(
    tmp_path, capsys, stop
):
    """While isolated jobs run in a process pool, Ctrl-C (SIGINT to the whole foreground
    process group, as a terminal sends it; exit 130) or SIGTERM to the driver alone (``kill
    PID``, Slurm's end of a job; exit 143, where the default action left the workers to
    their death watch and 10 leaked semaphores to the resource tracker): one line saying
    how to continue, no traceback (from the driver or a worker) nor resource-tracker
    warning, no process left, the lock free, and status says where the campaign stopped."""
    tag = uuid.uuid4().hex
    if stop == "ctrl-c":  # its own group (the test's terminal); SIGINT as in a shell
        proc, directory = _start_run(
            tmp_path, tag, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
        )
    else:
        proc, directory = _start_run(tmp_path, tag)
    seen: dict[int, int] = {}
    try:
        _until_a_job_runs(proc, seen)
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        code, how = (130, "interrupted") if stop == "ctrl-c" else (143, "terminated (SIGTERM)")
        assert proc.returncode == code, err[-2000:]
        assert "Traceback" not in err and "leaked" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            f"alcsp run: {how}; {directory} keeps everything finished so far: "
            f"continue it with `alcsp run {directory}`"
        ), err
        left = _wait_gone(seen, tag)
        assert not left, f"still alive after {stop}: {left}"
    finally:
        proc.kill()
        proc.wait()
        _kill_tagged(tag)
    assert holder(directory) is None
    capsys.readouterr()
    assert main(["status", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "not running" in out and "iteration 0: stopped in initial" in out, out
    assert re.search(r"iteration 0: stopped in initial .*, [1-9]\d* oracle jobs pending", out), out


SLEEPER = '''
import subprocess
import time
from dataclasses import dataclass

from alcsp.oracle.ase_oracle import CalculatorSpec


@dataclass(frozen=True)
class Params:
    pass


class SleeperSpec(CalculatorSpec):
    """A "code" that starts a child of its own (as mpirun would) and never ends."""

    name = "sleeper"
    Params = Params

    def compute(self, atoms, params, job):
        subprocess.Popen(["sleep", "300"])
        time.sleep(300)
'''

JOB_DRIVER = """
import sys
import threading

sys.path.insert(0, sys.argv[1])
from ase.build import bulk
from sleeper import Params, SleeperSpec

from alcsp.oracle.ase_oracle import ASEOracle

oracle = ASEOracle(SleeperSpec(), Params(), sys.argv[2], isolate=True)
# From a thread, as a Dask worker runs its tasks.
t = threading.Thread(target=oracle.label_one, args=(bulk("Cu", cubic=True), "k"))
t.start()
t.join()
"""


def test_an_isolated_job_and_its_children_die_with_the_process_that_started_it(tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB_DRIVER, str(tmp_path), str(tmp_path / "jobs")],
        env=_env(ALCSP_TEST_TAG=tag),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen: dict[int, int] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _descendants(proc.pid)
            if any(_cmdline(p).startswith("sleep 300") for p in seen):
                break
            time.sleep(0.02)
        cmds = [_cmdline(p) for p in seen]
        assert any(c.startswith("sleep 300") for c in cmds), (proc.poll(), cmds)
        assert len(seen) >= 3, cmds  # supervisor, calculation, the code's child
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = _wait_gone(seen, tag)
        assert not left, f"still alive after the job's parent died: {left}"
    finally:
        proc.kill()
        proc.wait()
        _kill_tagged(tag)


# ------------------------------------------------------------------ 2. the lock

HOLDER = """
import sys, time
from alcsp.lock import DirectoryLock
lock = DirectoryLock.acquire(sys.argv[1])
print("HELD", flush=True)
time.sleep(120)
"""


def test_a_second_run_refuses_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    CampaignStore.create(tmp_path / "c", CONFIG.format(oracle="", executor="inline")).close()
    directory = tmp_path / "c"
    assert holder(directory) is None
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "HELD"
        who = holder(directory)
        assert who is not None and who.pid == proc.pid and who.host
        capsys.readouterr()
        assert main(["run", str(directory), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {proc.pid} on {who.host}" in err and len(err.splitlines()) == 1, err
        with pytest.raises(CampaignBusy, match=f"pid {proc.pid}"):
            DirectoryLock.acquire(directory)
        # readers do not need the lock
        assert main(["status", str(directory)]) == 0
        assert f"running (pid {proc.pid} on {who.host})" in capsys.readouterr().out
        assert main(["report", str(directory)]) == 0
        with CampaignStore.open(directory, readonly=True) as store:
            assert store.meta("schema_version")
    finally:
        proc.kill()
        proc.wait()
    assert holder(directory) is None  # the kernel dropped it with the process
    with DirectoryLock.acquire(directory) as lock:
        assert holder(directory).pid == os.getpid()
        lock.release()
        assert not lock.held and holder(directory) is None
    assert main(["status", str(directory)]) == 0
    assert "not running" in capsys.readouterr().out


# ------------------------------------------------------------------ 3. atomic creation


def _complete(directory: Path, reference: dict) -> None:
    """The campaign in ``directory`` is whole: what a create that was never killed gives."""
    from alcsp.campaign import Campaign

    campaign = Campaign.open(directory)
    try:
        store = campaign.store
        assert store.directory == directory.absolute()
        assert store.integrity_check() == "ok"
        assert store.compositions() == reference["compositions"]
        assert sorted(campaign.reference_names().values()) == reference["references"]
        assert store.config_text == reference["config"]
        dump = "\n".join(store.conn.iterdump())
        assert ".creating-" not in dump  # nothing names the temporary folder
    finally:
        campaign.close()


def _create_and_die_at(directory: Path, config: str, k: int) -> int:
    """Fork; the child creates the campaign and dies (``os._exit``: no cleanup, no
    ``finally``, the kernel drops its locks: a kill) at its k-th line of alcsp code.
    Returns the child's count of alcsp lines when it was not killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        count = 0

        def trace(frame, event, arg):
            nonlocal count
            if "/alcsp/" not in frame.f_code.co_filename:
                return None
            if event == "line":
                count += 1
                if count == k:
                    os._exit(9)
            return trace

        from alcsp.campaign import Campaign

        code = 0
        sys.settrace(trace)
        try:
            Campaign.create(directory, config).close()
        except BaseException:
            code = 1
        sys.settrace(None)
        os.write(w, str(count).encode())
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 64):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), f"create failed in the child (exit {code})"
    return int(out or 0) if code == 0 else 0


def test_a_create_killed_at_any_moment_leaves_no_campaign_or_a_whole_one(tmp_path):
    from alcsp.campaign import Campaign

    config = CONFIG.format(oracle="", executor="inline") + REFERENCES
    ref_dir = tmp_path / "ref"
    n_lines = _create_and_die_at(ref_dir, config, k=0)  # never killed: count the lines
    assert n_lines > 20
    with CampaignStore.open(ref_dir, readonly=True) as store:
        reference = {"compositions": store.compositions(), "config": config}
    campaign = Campaign.open(ref_dir)
    reference["references"] = sorted(campaign.reference_names().values())
    campaign.close()
    assert reference["references"] == ["bcc Cu", "fcc Au", "fcc Cu"]

    def killed_at(k: int) -> Path:
        directory = tmp_path / f"k{k}"
        if not directory.exists() and not list(tmp_path.glob(f".k{k}.creating-*")):
            _create_and_die_at(directory, config, k)
        return directory

    # The campaign appears at one moment (the rename); find it, and kill around it too.
    lo, hi = 1, n_lines  # killed at lo: absent; at hi: whole
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if killed_at(mid).exists() else (mid, hi)
    moments = {*range(1, n_lines, max(1, n_lines // 12)), *range(hi - 4, hi + 3), n_lines - 1}
    outcomes = {"absent": 0, "whole": 0}
    for k in sorted(moments):
        directory = killed_at(k)
        if directory.exists():
            _complete(directory, reference)
            outcomes["whole"] += 1
        else:
            outcomes["absent"] += 1
            # the next create of the directory succeeds and removes what the kill left,
            # except a folder killed before its creator locked it, until it is a minute old
            Campaign.create(directory, config).close()
            _complete(directory, reference)
            for left in tmp_path.glob(f".k{k}.creating-*"):
                assert recorded_holder(left) is None, left
    assert outcomes["absent"] > 5 and outcomes["whole"] > 3, outcomes

    # and one of them runs: iteration 0 labels its structures with EMT
    campaign = Campaign.open(tmp_path / "k1")
    try:
        campaign.initial_data()
        assert campaign.store.count("labels") >= 12
    finally:
        campaign.close()


def _create_beside(
    directory: Path, n: int, barrier: threading.Barrier, outcomes: list[object]
) -> None:
    """Create ``directory``, having built it in step with another thread."""
    try:
        store = CampaignStore.create(
            directory, f"config {n}", "0", populate=lambda s: barrier.wait(10)
        )
        outcomes.append(store.config_text)
        store.close()
    except CampaignDirError as exc:
        outcomes.append(exc)


def test_two_creates_at_once_give_one_campaign_and_one_clear_error(tmp_path):
    for attempt in range(3):
        directory = tmp_path / f"c{attempt}"
        barrier = threading.Barrier(2)
        outcomes: list[object] = []
        threads = [
            threading.Thread(target=_create_beside, args=(directory, n, barrier, outcomes))
            for n in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [o for o in outcomes if isinstance(o, str)]
        lost = [o for o in outcomes if isinstance(o, CampaignDirError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert "created by another process" in str(lost[0]) and "\n" not in str(lost[0])
        with CampaignStore.open(directory, readonly=True) as store:
            assert store.config_text == won[0]
        assert not list(tmp_path.glob(f".c{attempt}.creating-*"))


def test_two_alcsp_run_creates_at_once(tmp_path):
    """The CLI: of two ``alcsp run CONFIG --dir X`` at once, one runs, the other exits
    with 2 and one line (it lost the create, or found the new campaign running)."""
    config = tmp_path / "ops.toml"
    config.write_text(CONFIG.format(oracle="", executor="inline"))
    directory = tmp_path / "c"
    tag = uuid.uuid4().hex
    cmd = [
        sys.executable,
        "-m",
        "alcsp.cli",
        "run",
        str(config),
        "--dir",
        str(directory),
        "--quiet",
    ]
    procs = [
        subprocess.Popen(
            cmd,
            env=_env(ALCSP_TEST_TAG=tag),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        # (the winner goes on running the campaign; it is killed below)
        (loser,) = [p for p in procs if p.poll() == 2]
        err = loser.stderr.read().strip()
        assert loser.returncode == 2 and len(err.splitlines()) == 1, err
        # lost the create, found the new campaign running, or (when the winner's create
        # landed before the loser looked) found it already created
        phrases = ("created by another process", "is being run by pid", "already holds a campaign")
        assert any(phrase in err for phrase in phrases), err
    finally:
        for p in procs:
            p.kill()
            p.wait()
        _kill_tagged(tag)
    with CampaignStore.open(directory, readonly=True) as store:
        assert store.count("compositions") > 0


def test_leftovers_and_unfinished_directories_are_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "ops.toml"
    config.write_text(CONFIG.format(oracle="", executor="inline"))

    # an older alcsp killed during create: campaign.sqlite without any table
    old = tmp_path / "old"
    old.mkdir()
    sqlite3.connect(old / DB_NAME).close()
    (old / DB_NAME).write_bytes(b"")
    for argv in (
        ["run", str(old)],
        ["status", str(old)],
        ["report", str(old)],
        ["run", str(config), "--dir", str(old)],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "not a finished campaign" in err and f"delete {old}" in err, err
        assert len(err.splitlines()) == 1, err
    conn = sqlite3.connect(old / DB_NAME)  # one with a table but no meta: the same
    conn.execute("CREATE TABLE structures (id INTEGER)")
    conn.close()
    with pytest.raises(CampaignDirError, match="not a finished campaign"):
        CampaignStore.open(old, readonly=True)

    # a killed create's temporary folder: never a campaign, removed by the next create
    leftover = tmp_path / ".new.creating-0badf00d"
    leftover.mkdir()
    (leftover / LOCK_NAME).write_text('{"pid": 999999, "host": "gone", "started": 0}')
    fresh = tmp_path / ".new.creating-00000000"  # made this instant, not locked yet
    fresh.mkdir()
    aged = tmp_path / ".new.creating-11111111"  # killed right after mkdir, long ago
    aged.mkdir()
    os.utime(aged, (time.time() - 3600, time.time() - 3600))
    CampaignStore.create(tmp_path / "elsewhere").close()
    assert leftover.exists()  # another directory's create leaves it alone
    (leftover / DB_NAME).write_bytes(b"")
    for argv in (["run", str(leftover)], ["status", str(leftover)]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "temporary folder" in err and len(err.splitlines()) == 1, err
    # a create in progress (its creator holds the lock) is left alone
    busy = tmp_path / ".new.creating-00c0ffee"
    busy.mkdir()
    with DirectoryLock.acquire(busy):
        CampaignStore.create(tmp_path / "new").close()
        assert busy.exists() and fresh.exists()
        assert not leftover.exists() and not aged.exists()
    with CampaignStore.open(tmp_path / "new", readonly=True) as store:
        assert store.meta("schema_version")

    # an existing empty directory, and one holding other files: both become campaigns
    (tmp_path / "empty").mkdir()
    CampaignStore.create(tmp_path / "empty").close()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    CampaignStore.create(mine, "cfg").close()
    assert (mine / "notes.txt").read_text() == "keep me"
    with CampaignStore.open(mine, readonly=True) as store:
        assert store.config_text == "cfg"
    with pytest.raises(CampaignDirError, match="already holds a campaign"):
        CampaignStore.create(mine)
    (tmp_path / "file").write_text("")
    with pytest.raises(CampaignDirError, match="is a file"):
        CampaignStore.create(tmp_path / "file")


def test_a_stale_lock_file_does_not_block(tmp_path):
    """A lock file left by a killed run (its holder long gone) names nobody."""
    CampaignStore.create(tmp_path / "c").close()
    (tmp_path / "c" / LOCK_NAME).write_text(
        textwrap.dedent('{"pid": 999999, "host": "gone", "started": 0}')
    )
    assert holder(tmp_path / "c") is None
    with DirectoryLock.acquire(tmp_path / "c"):
        assert holder(tmp_path / "c").host != "gone"
