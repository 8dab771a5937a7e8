"""``alcsp converge``: volumes at the pressure (EMT), the GPAW settings scan against direct
GPAW calculations, verdicts, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from alcsp.cli import main
from alcsp.config import parse_config
from alcsp.converge import (
    Calculation,
    ConvergeOptions,
    SettingScan,
    SettingValue,
    TestCell,
    converge,
    reference_cells,
)
from alcsp.units import GPA

EMT_CONFIG = """
[campaign]
name = "c"
pressure = 10.0
[compositions]
elements = ["Cu", "Au"]
max_formula_atoms = 2
[oracle]
name = "emt"
"""

# 1-atom fcc Al at tiny settings: a few seconds per GPAW single point on one core.
GPAW_CONFIG = """
[campaign]
name = "al"
pressure = 10.0
[compositions]
elements = ["Al"]
max_formula_atoms = 1
[generate]
element_volumes = { Al = 15.0 }
[oracle]
name = "gpaw"
isolate = false
parameters = { ecut = 250.0, kspacing = 0.1, smearing = 0.1 }
"""


def _emt_pressure(atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return -np.trace(atoms.get_stress(voigt=False)) / 3 / GPA


def test_reference_cells_are_fcc_elements_and_the_most_different_pair_as_b2():
    cells = reference_cells(["Mg", "Ca", "H"])
    assert [c.name for c in cells] == ["Mg fcc", "Ca fcc", "H fcc", "CaH B2"]
    assert [c.name for c in reference_cells(["Be", "P", "N", "O"])][-1] == "BeO B2"
    assert [c.name for c in reference_cells(["Al"])] == ["Al fcc"]
    b2 = cells[-1].build(5.0)
    assert len(b2) == 2 and b2.get_volume() == pytest.approx(10.0)
    assert len(cells[0].build(7.0)) == 1 and cells[0].build(7.0).get_volume() == pytest.approx(7.0)


def test_emt_volumes_reach_the_pressure_and_the_scan_does_not_apply(tmp_path):
    result = converge(parse_config(EMT_CONFIG), tmp_path)
    assert "does not apply" in result.scan_note and result.scans == ()
    assert [v.cell.name for v in result.volumes] == ["Cu fcc", "Au fcc", "CuAu B2"]
    for v in result.volumes:
        assert v.converged and v.overlap is None
        # recomputed with EMT directly: the volume found gives the pressure within 5%
        p = _emt_pressure(v.cell.build(v.found.volume_per_atom))
        assert p == pytest.approx(10.0, rel=0.05), (v.cell.name, p)
        assert p == pytest.approx(v.found.pressure_gpa, abs=1e-6)
        # the interpolated hint is closer still
        assert _emt_pressure(v.cell.build(v.volume_at_target)) == pytest.approx(10.0, abs=0.3)
    hints = dict(result.element_volumes)
    assert set(hints) == {"Cu", "Au"} and 10.0 < hints["Cu"] < 11.8 < hints["Au"]


def test_emt_cli_table_json_and_temporary_workdir(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "emt.toml"
    cfg.write_text(EMT_CONFIG)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out" / "r.json"
    assert main(["converge", str(cfg), "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no progress lines unless --verbose (or a terminal)
    text = captured.out
    assert "the settings scan does not apply" in text
    assert "[generate] element_volumes = { Cu = " in text
    for name in ("Cu fcc", "Au fcc", "CuAu B2"):
        assert name in text
    assert list(scratch.iterdir()) == []  # the temporary work directory is gone
    data = json.loads(out.read_text())
    assert set(data["element_volumes"]) == {"Cu", "Au"}
    assert data["scans"] == [] and len(data["volumes"]) == 3
    assert data["volumes"][0]["cell"]["name"] == "Cu fcc"
    # --keep leaves the jobs; --verbose reports each calculation on stderr
    assert main(["converge", str(cfg), "--keep", "-v"]) == 0
    captured = capsys.readouterr()
    assert "job files kept in" in captured.out and len(list(scratch.iterdir())) == 1
    assert "Cu fcc, volume step 1" in captured.err


def _scan(values: list[tuple[float, float, float]], config_index: int = 0) -> SettingScan:
    cell = TestCell("Mg fcc", ("Mg",), "fcc")
    tight = values[-1]
    out = []
    for x, e, p in values:
        c = Calculation(7.0, e, e, p, 1.0, 1)
        de, dp = 1000 * (e - tight[1]), p - tight[2]
        out.append(SettingValue(x, f"{x:g} eV", c, de, dp, abs(de) <= 5 and abs(dp) <= 2))
    return SettingScan(cell, "ecut", tuple(out), config_index)


def test_verdict_sentences():
    bad = _scan([(400, -1.055, 306.5), (500, -1.003, 300.4), (600, -1.000, 300.0)])
    assert bad.verdict == (
        "Mg fcc: ecut 400 eV: not converged (ΔE -55.0 meV/atom, ΔP +6.50 GPa); 500 eV is"
    )
    ok = _scan([(400, -1.001, 300.5), (500, -1.0, 300.0), (600, -1.0, 300.0)])
    assert ok.verdict.endswith("converged (ΔE -1.0 meV/atom, ΔP +0.50 GPa)")
    only = _scan([(400, -1.1, 310.0), (500, -1.05, 305.0), (600, -1.0, 300.0)])
    assert only.only_tightest and "extend the scan" in only.verdict


def _gpaw_direct(atoms, ecut: float, kspacing: float) -> tuple[float, float]:
    """(E0 eV/atom, P GPa) from GPAW itself, settings as the oracle's (nbands "auto")."""
    from gpaw import GPAW, PW, FermiDirac

    from alcsp.oracle.ase_oracle import kpts_from_spacing
    from alcsp.oracle.gpaw import auto_nbands

    a = atoms.copy()
    a.calc = GPAW(
        mode=PW(ecut),
        xc="PBE",
        kpts=kpts_from_spacing(a, kspacing),
        occupations=FermiDirac(0.1),
        nbands=auto_nbands(a),
        txt=None,
    )
    e0 = a.get_potential_energy() / len(a)  # ASE's "energy": extrapolated to zero smearing
    return e0, -np.trace(a.get_stress(voigt=False)) / 3 / GPA


@pytest.mark.dft
def test_gpaw_scan_rows_verdicts_and_deltas_match_direct_gpaw(tmp_path, capsys):
    pytest.importorskip("gpaw")
    cfg = tmp_path / "al.toml"
    cfg.write_text(GPAW_CONFIG)
    out = tmp_path / "r.json"
    # 150 eV (0.6 x 250) is deliberately too loose for Al's setup.
    argv = [
        "converge",
        str(cfg),
        "--json",
        str(out),
        "--ecut-factors",
        "0.6,1,1.5",
        "--workdir",
        str(tmp_path / "jobs"),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    (vol,) = data["volumes"]
    assert vol["converged"] and abs(vol["found"]["pressure_gpa"] - 10.0) <= 0.5
    assert vol["overlap"] == ""  # Al at ~15.5 Å³/atom: no PAW sphere overlap
    scans = {s["setting"]: s for s in data["scans"]}
    assert set(scans) == {"ecut", "kspacing", "nbands"}
    assert [v["label"] for v in scans["ecut"]["values"]] == ["150 eV", "250 eV", "375 eV"]
    assert [v["value"] for v in scans["kspacing"]["values"]] == pytest.approx([0.1, 0.067, 0.05])
    assert [v["label"] for v in scans["nbands"]["values"]] == ["auto (6)", "12"]
    # the table: 3 + 3 + 2 rows, the config's value marked
    for row in ("150 eV", "250 eV *", "375 eV", "0.1 *", "0.067", "0.05", "auto (6) *", "12"):
        assert row in text, row
    loose, cfg_value, tight = scans["ecut"]["values"]
    assert not loose["converged"] and tight["converged"]
    assert "NO" in next(line for line in text.splitlines() if "150 eV" in line)
    assert scans["ecut"]["config_index"] == 1
    # ΔE and ΔP equal those of direct GPAW calculations at the volume found
    atoms = bulk("Al", "fcc", a=(4 * vol["found"]["volume_per_atom"]) ** (1 / 3))
    e150, p150 = _gpaw_direct(atoms, 150.0, 0.1)
    e375, p375 = _gpaw_direct(atoms, 375.0, 0.1)
    assert loose["d_energy_mev"] == pytest.approx(1000 * (e150 - e375), abs=0.2)
    assert loose["d_pressure_gpa"] == pytest.approx(p150 - p375, abs=0.05)
    assert abs(loose["d_energy_mev"]) > 5  # why it is flagged
    verdicts = [line.strip() for line in data["verdicts"]]
    assert verdicts[0].startswith("Al fcc: ecut 250 eV: ")
    assert "Recommended [oracle] parameters:" in text


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("alcsp converge: error: "), err
    return err


def test_bad_input_one_line_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["converge", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in _err_line(capsys)
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign\n")
    assert main(["converge", str(bad)]) == 2
    assert "not valid TOML" in _err_line(capsys)
    qe = tmp_path / "qe.toml"
    espresso = (
        f'name = "espresso"\nparameters = {{ pseudo_dir = "{tmp_path}", '
        'pseudopotentials = { Cu = "Cu.upf", Au = "Au.upf" } }'
    )
    qe.write_text(EMT_CONFIG.replace('name = "emt"', espresso))
    assert main(["converge", str(qe)]) == 2
    assert "only GPAW is supported yet" in _err_line(capsys)
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    (campaign / "campaign.sqlite").write_text("")
    emt = tmp_path / "emt.toml"
    emt.write_text(EMT_CONFIG)
    for inside in (campaign, campaign / "converge"):
        assert main(["converge", str(emt), "--workdir", str(inside)]) == 2
        assert "inside the campaign directory" in _err_line(capsys)
    assert not (campaign / "converge").exists()
    assert main(["converge", str(emt), "--ecut-factors", "1.5,2"]) == 2
    assert "including 1" in _err_line(capsys)


def test_oracle_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    from alcsp.oracle.ase_oracle import MissingBinary
    from alcsp.oracle.gpaw import GPAWSpec

    def missing(self, params):
        raise MissingBinary(
            "GPAW is not installed (No module named 'gpaw'); run scripts/install_gpaw.sh"
        )

    monkeypatch.setattr(GPAWSpec, "preflight", missing)
    cfg = tmp_path / "al.toml"
    cfg.write_text(GPAW_CONFIG)
    assert main(["converge", str(cfg), "--workdir", str(tmp_path / "jobs")]) == 2
    err = _err_line(capsys)
    assert "cannot run here" in err and "install_gpaw.sh" in err


@pytest.mark.dft
def test_scf_failure_names_the_cell_and_the_fix(tmp_path, capsys):
    pytest.importorskip("gpaw")
    cfg = tmp_path / "al.toml"
    cfg.write_text(
        GPAW_CONFIG.replace("smearing = 0.1 }", "smearing = 0.1, maxiter = 2 }").replace(
            "isolate = false", "isolate = false\nretries = []"
        )
    )
    assert main(["converge", str(cfg), "--workdir", str(tmp_path / "jobs")]) == 2
    err = _err_line(capsys)
    assert "Al fcc" in err and "volume step 1" in err and "scf_not_converged" in err
    assert "fix:" in err and "mixer_beta" in err


def test_options_are_validated():
    with pytest.raises(ValueError, match="tolerances"):
        ConvergeOptions(energy_tol_mev=0)
    with pytest.raises(ValueError, match="a value besides 1"):
        ConvergeOptions(kspacing_factors=(1.0,))
