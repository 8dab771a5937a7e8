"""Electronic structure with the GPAW oracle (alcsp.analysis.electronic) and
``alcsp analyse --what electronic,tc``.

Reference values:

- Rock-salt MgO at the PBE lattice constant a = 4.25 Å: PBE band gap 4.45 eV, direct at Γ
  (Materials Project mp-1265, GGA-PBE; A. Jain et al., APL Mater. 1, 011002 (2013)). The
  gap is read at Γ on the band path, so the SCF mesh hardly matters: 500 eV with the 7×7×7
  mesh here, a 6×6×6 or an 11×11×11 mesh all give 4.51 eV.
- fcc Al at a = 4.04 Å: a metal; its DOS at E_F is near the free-electron value
  3Z/(2E_F) = 9/(2 × 11.7 eV) = 0.38 states/eV/atom.

Each GPAW run here takes seconds (1–2 atom cells, cheap k-meshes, one thread).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal

from alcsp.analysis.electronic import (
    ElectronicSettings,
    ElectronicStructure,
    analyse_electronic,
    element_order,
    run_scf,
)
from alcsp.analysis.report_sections import electronic_sections
from alcsp.analysis.results import electronic_path, load_keyed, tc_path
from alcsp.cli import main
from alcsp.oracle.base import Label
from alcsp.oracle.gpaw import GPAWParams
from alcsp.store import CampaignStore

pytest.importorskip("gpaw")

MGO_PBE_GAP = 4.45  # eV, Materials Project mp-1265


@pytest.fixture(scope="module")
def mgo(tmp_path_factory):
    d = tmp_path_factory.mktemp("mgo")
    atoms, calc = run_scf(
        bulk("MgO", "rocksalt", a=4.25),
        GPAWParams(ecut=500.0, kspacing=0.06, smearing=0.01),
        d,
    )
    return analyse_electronic(atoms, calc, ElectronicSettings(path_points=60), d)


def test_mgo_pbe_gap(mgo):
    assert mgo.gap == pytest.approx(MGO_PBE_GAP, abs=0.2)
    assert mgo.gap_kind == "direct" and mgo.direct_gap == pytest.approx(mgo.gap)
    assert mgo.vbm_k == pytest.approx((0, 0, 0)) and mgo.cbm_k == pytest.approx((0, 0, 0))
    assert mgo.dos_at_fermi == pytest.approx(0.0, abs=1e-9) and mgo.h_dos is None
    assert mgo.bands.labels[0] == "G" and mgo.bands.energies.shape[:2] == (1, 60)
    # the valence band lies below E_F, the conduction band above, nothing in between
    bands = mgo.bands.energies
    vb, cb = bands[bands < 0].max(), bands[bands > 0].min()
    assert cb - vb == pytest.approx(mgo.gap, abs=1e-6)
    e = mgo.dos_energies
    inside = (e > vb + 0.2) & (e < cb - 0.2)
    assert np.all(mgo.dos_total[inside] == 0) and mgo.dos_total[e < -1].max() > 0
    assert set(mgo.pdos) == {"Mg", "O"} and mgo.pdos["O"][e < 0].sum() > mgo.pdos["Mg"][e < 0].sum()


def test_json_round_trip(mgo):
    back = ElectronicStructure.from_json(json.loads(json.dumps(mgo.to_json())))
    assert back.gap == mgo.gap and back.bands.path == mgo.bands.path
    np.testing.assert_allclose(back.dos_energies, mgo.dos_energies)
    np.testing.assert_allclose(back.dos_total, mgo.dos_total, atol=1e-6)


def test_aluminium_is_a_gapless_metal(tmp_path):
    atoms, calc = run_scf(
        bulk("Al", "fcc", a=4.04), GPAWParams(ecut=300.0, kspacing=0.05), tmp_path
    )
    es = analyse_electronic(atoms, calc, ElectronicSettings(path_points=40, dos_points=301))
    assert es.gap == 0.0 and es.gap_kind == "metal" and es.vbm_k is None
    assert 0.25 < es.dos_at_fermi_per_atom < 0.5  # free electrons: 0.38
    assert es.pdos_at_fermi["Al"] > 0 and es.h_dos is None
    # a band crosses E_F on the path
    bands = es.bands.energies[0]
    assert any(b.min() < 0 < b.max() for b in bands.T)


def test_settings_and_order():
    with pytest.raises(ValueError, match="must contain E_F"):
        ElectronicSettings(dos_emin=1.0)
    with pytest.raises(ValueError, match="dos_kspacing"):
        ElectronicSettings(dos_kspacing=0.0)
    assert element_order(["H", "S", "H", "Ca"]) == ["S", "Ca", "H"]


# ------------------------------------------------------------------------ alcsp analyse

CONFIG = """
[campaign]
name = "{name}"
pressure = 0.0

[compositions]
elements = {elements}
max_formula_atoms = 8

[oracle]
name = "{oracle}"
{parameters}
"""

CHEAP = "[oracle.parameters]\necut = 350.0\nkspacing = 0.06\n"


def h3s(a: float = 2.984) -> Atoms:
    return crystal(
        ["S", "H"],
        [(0, 0, 0), (0, 0.5, 0.5)],
        spacegroup=229,
        cellpar=[a, a, a, 90, 90, 90],
        primitive_cell=True,
    )


def _label(atoms: Atoms, energy_per_atom: float, oracle: str) -> Label:
    n = len(atoms)
    return Label(energy_per_atom * n, np.zeros((n, 3)), np.zeros((3, 3)), oracle, 0.0)


def sh_campaign(directory: Path, oracle: str = "gpaw", parameters: str = CHEAP) -> dict[str, int]:
    """An S–H store built by hand (labels invented, pressure 0 so H = E/N): S and H2
    terminals and Im-3m H3S on the hull."""
    h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[2.2, 2.2, 2.2], pbc=True)
    structures = {
        "S": (bulk("S", "sc", a=2.6), -3.0),
        "H": (h2, -3.3),
        "H3S": (h3s(), -3.6),
    }
    text = CONFIG.format(name="sh", elements='["S", "H"]', oracle=oracle, parameters=parameters)
    store = CampaignStore.create(directory, text)
    with store:
        ids = store.add_structures([s for s, _ in structures.values()], "import", 0)
        store.add_labels(
            [
                (sid, _label(s, e, oracle))
                for sid, (s, e) in zip(ids, structures.values(), strict=True)
            ],
            0,
        )
    return dict(zip(structures, ids, strict=True))


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """The stored results under DIR/analysis with their sizes and modification times."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (electronic_path(directory), tc_path(directory))
        if p.exists()
    }


def test_analyse_electronic_and_tc_stores_and_reuses(tmp_path, capsys, monkeypatch):
    d = tmp_path / "sh"
    ids = sh_campaign(d)
    out_json = tmp_path / "table.json"
    assert main(["analyse", str(d), "--what", "electronic,tc", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "H3S" in out and "Im-3m (229)" in out and "metal" in out
    assert "not an Eliashberg calculation" in out and "±60" in out
    table = json.loads(out_json.read_text())
    (row,) = table["electronic"]["rows"]
    assert row["structure_id"] == ids["H3S"] and row["gap"] == 0.0
    assert 0.0 < row["h_dos"] < 1.0 and row["h_fraction"] == 0.75
    assert row["phi"] == pytest.approx(0.679, abs=0.015)
    expected = 750 * row["phi"] * 0.75 * row["h_dos"] ** (1 / 3) - 85
    assert row["tc_estimate_k"] == pytest.approx(expected) and row["sigma_k"] == 60.0
    assert "Belli" in table["tc"]["formula"]
    results, last = load_keyed(electronic_path(d), "electronic")
    ((key, stored),) = results.items()
    assert set(stored) == {ids["H3S"]} and last is not None and last.settings_key == key
    tresults, tlast = load_keyed(tc_path(d), "tc")
    assert [set(r) for r in tresults.values()] == [{ids["H3S"]}] and tlast is not None

    # a second call computes nothing: the same table from the stored results
    def refuse(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr("alcsp.analysis.electronic.run_scf", refuse)
    before = [
        load_keyed(p, w)[0] for p, w in ((electronic_path(d), "electronic"), (tc_path(d), "tc"))
    ]
    assert main(["analyse", str(d), "--what", "electronic,tc"]) == 0
    again = capsys.readouterr().out
    assert again.splitlines()[2] == out.splitlines()[2]
    after = [
        load_keyed(p, w)[0] for p, w in ((electronic_path(d), "electronic"), (tc_path(d), "tc"))
    ]
    assert after == before  # the stored results as they were (only last_run is rewritten)

    # the report sections: band/DOS figure, tables, T_c against E_hull
    report = tmp_path / "report"
    page = electronic_sections(d, report)
    assert "Electronic structure" in page and "T<sub>c</sub> estimates" in page
    assert "not an Eliashberg calculation" in page and "data:image/png;base64" in page
    assert (report / f"electronic_{ids['H3S']}.png").stat().st_size > 1000
    assert (report / "tc_vs_ehull.png").exists()
    assert electronic_sections(tmp_path / "nowhere", report) == ""


def test_analyse_structure_gpaw_cannot_compute(tmp_path, capsys):
    d = tmp_path / "sh"
    sh_campaign(d, parameters=CHEAP + "maxiter = 1\n")  # the SCF cannot converge
    assert main(["analyse", str(d), "--what", "electronic"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "could be computed with GPAW" in err[0], captured.err
    assert "GPAW could not compute it" in captured.out
    assert snapshot(d) == {}  # nothing stored


def cuau_campaign(directory: Path) -> None:
    text = CONFIG.format(name="cuau", elements='["Cu", "Au"]', oracle="emt", parameters="")
    store = CampaignStore.create(directory, text)
    with store:
        cells = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08)]
        ids = store.add_structures(cells, "import", 0)
        store.add_labels(
            [(sid, _label(a, -3.0, "emt")) for sid, a in zip(ids, cells, strict=True)], 0
        )


@pytest.mark.parametrize(
    ("campaign", "args", "message"),
    [
        ("cuau", ["--what", "tc"], "include no hydrogen: the T_c estimate"),
        (
            "cuau",
            ["--what", "electronic"],
            "needs the GPAW oracle; this campaign's oracle is 'emt'",
        ),
        ("sh-emt", ["--what", "electronic,tc"], "needs the GPAW oracle"),
        ("sh", ["--what", "electronic,tc", "--ehull", "-1"], "--ehull must be >= 0"),
        ("sh", ["--what", "tc,phonons"], "'phonons' is not an analysis"),
        ("missing", ["--what", "tc"], "holds no campaign"),
    ],
)
def test_analyse_electronic_bad_input(tmp_path, capsys, campaign, args, message):
    d = tmp_path / campaign
    if campaign == "cuau":
        cuau_campaign(d)
    elif campaign == "sh":
        sh_campaign(d)
    elif campaign == "sh-emt":
        sh_campaign(d, oracle="emt", parameters="")
    assert main(["analyse", str(d), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (d / "analysis").exists()


def test_analyse_window_selecting_nothing(tmp_path, capsys):
    d = tmp_path / "sh"
    h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[2.2, 2.2, 2.2], pbc=True)
    text = CONFIG.format(name="sh", elements='["S", "H"]', oracle="gpaw", parameters=CHEAP)
    store = CampaignStore.create(d, text)
    with store:
        cells = [bulk("S", "sc", a=2.6), h2, h3s()]
        ids = store.add_structures(cells, "import", 0)
        energies = [-3.0, -3.3, -3.0]  # H3S 225 meV/atom above the S–H2 tie line
        store.add_labels(
            [(sid, _label(a, e, "gpaw")) for sid, a, e in zip(ids, cells, energies, strict=True)],
            0,
        )
    assert main(["analyse", str(d), "--what", "tc", "--ehull", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "no hydride within E_hull <= 0.05 eV/atom (the lowest is 225.0 meV/atom)" in err
    assert not (d / "analysis").exists()
