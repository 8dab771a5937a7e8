import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from alcsp.hull import HullEntry, build_hull, build_hull_from_entries, read_entries
from alcsp.units import GPA


def _binary():
    # Cu-Au by hand: hull through Cu (0), CuAu (-1), CuAu3 (-0.6), Au (0);
    # Cu3Au at -0.4 lies 0.1 eV/atom above the Cu-CuAu tie line (-0.5 at x = 1/4).
    return [
        HullEntry("cu", "Cu", 0.0),
        HullEntry("cu_hi", "Cu4", 0.3),
        HullEntry("au", "Au", 0.0),
        HullEntry("cuau", "CuAu", -1.0),
        HullEntry("cuau_b", "Cu2Au2", -0.95),
        HullEntry("cu3au", "Cu3Au", -0.4),
        HullEntry("cuau3", "CuAu3", -0.6, is_reference=True),
    ]


def test_binary_known_hull():
    res = build_hull_from_entries(_binary())
    e = dict(zip(res.ids, res.e_hull, strict=True))
    assert e["cu"] == pytest.approx(0, abs=1e-12)
    assert e["cuau"] == pytest.approx(0, abs=1e-12)
    assert e["cuau3"] == pytest.approx(0, abs=1e-12)
    assert e["cu3au"] == pytest.approx(0.1)
    assert e["cuau_b"] == pytest.approx(0.05)
    assert e["cu_hi"] == pytest.approx(0.3)
    assert sorted(res.stable_keys) == sorted(["Cu", "Au", "CuAu", "CuAu3"])
    assert sorted(res.ids[i] for i in res.stable_indices) == ["au", "cu", "cuau", "cuau3"]
    f = dict(zip(res.ids, res.formation, strict=True))
    assert f["cuau"] == pytest.approx(-1.0) and f["cu_hi"] == pytest.approx(0.3)
    d = res.decomposition("Cu3Au")
    assert d == pytest.approx({"Cu": 0.5, "CuAu": 0.5})
    assert res.e_hull_mev[res.ids.index("cu3au")] == pytest.approx(100.0)


def test_reference_flagged_and_excluded_from_training():
    res = build_hull_from_entries(_binary())
    i = res.ids.index("cuau3")
    assert res.is_reference[i] and not res.training_mask[i]
    assert res.training_mask.sum() == len(res.ids) - 1
    # the reference phase is on the hull and shapes it: without it CuAu3 (-0.6) is missing
    # and a candidate at CuAu3 with -0.55 would be stable
    entries = [*_binary()[:-1], HullEntry("cand", "CuAu3", -0.55)]
    assert build_hull_from_entries(entries).e_hull[-1] == pytest.approx(0, abs=1e-12)
    with_ref = build_hull_from_entries([*_binary(), HullEntry("cand", "CuAu3", -0.55)])
    assert with_ref.e_hull[-1] == pytest.approx(0.05)


def test_missing_terminal_raises():
    with pytest.raises(ValueError, match=r"no entry for element\(s\) \['Au'\]"):
        build_hull(["Cu", "CuAu"], [0.0, -1.0])
    with pytest.raises(ValueError, match="outside the system"):
        build_hull(["Cu", "Au", "CuAg"], [0.0, 0.0, -1.0], elements=["Cu", "Au"])
    with pytest.raises(ValueError, match="non-finite"):
        build_hull(["Cu", "Au"], [0.0, np.nan])


def test_vectorised_e_hull_matches_pymatgen_ternary():
    rng = np.random.default_rng(7)
    els = ["Mg", "Ca", "H"]
    comps, h = [], []
    for e in els:
        for _ in range(3):
            comps.append(e)
            h.append(rng.normal(0, 0.05))
    for _ in range(300):
        n = rng.integers(0, 5, size=3)
        if n.sum() == 0:
            continue
        comps.append("".join(f"{e}{k}" for e, k in zip(els, n, strict=True) if k))
        h.append(rng.normal(-0.2, 0.3))
    res = build_hull(comps, h)
    pd_entries = [
        PDEntry(Composition(c), hh * Composition(c).num_atoms)
        for c, hh in zip(comps, h, strict=True)
    ]
    pd = PhaseDiagram(pd_entries)
    ref = np.array([pd.get_e_above_hull(e) for e in pd_entries])
    np.testing.assert_allclose(res.e_hull, ref, atol=1e-9)
    form = np.array([pd.get_form_energy_per_atom(e) for e in pd_entries])
    np.testing.assert_allclose(res.formation, form, atol=1e-9)
    assert res.e_hull.min() > -1e-9


def test_read_entries_enthalpy(tmp_path):
    a = bulk("Cu", "fcc", a=3.6)
    a.calc = SinglePointCalculator(a, energy=-3.0)
    p = tmp_path / "cu.extxyz"
    write(p, [a])
    (entry,) = read_entries(p, pressure_gpa=10.0)
    assert entry.enthalpy_per_atom == pytest.approx((-3.0 + 10 * GPA * a.get_volume()) / len(a))
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_entries(empty, 0.0)
