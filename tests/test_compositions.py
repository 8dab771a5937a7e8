import pytest
from pymatgen.core import Composition

from alcsp.compositions import (
    CompositionRules,
    RatioCap,
    enumerate_compositions,
    is_charge_neutral,
    load_rules,
    rules_from_mapping,
)


def _counts(space, els):
    return [tuple(int(e.composition[x]) for x in els) for e in space]


def test_binary_up_to_four_atoms_by_hand():
    rules = CompositionRules(("Cu", "Au"), max_formula_atoms=4, max_cell_atoms=4)
    space = enumerate_compositions(rules)
    # irreducible (a, b), a + b <= 4: Cu, Au, CuAu, CuAu2, Cu2Au, CuAu3, Cu3Au
    assert sorted(_counts(space, ("Cu", "Au"))) == sorted(
        [(1, 0), (0, 1), (1, 1), (1, 2), (2, 1), (1, 3), (3, 1)]
    )
    z = {e.key: e.formula_units for e in space}
    assert z["Cu"] == (1, 2, 3, 4)
    assert z["CuAu"] == (1, 2)
    assert z["CuAu3"] == (1,)
    assert space.n_cells == 4 + 4 + 2 + 1 + 1 + 1 + 1


def test_min_cell_atoms_drops_small_formula_units():
    rules = CompositionRules(("Cu", "Au"), max_formula_atoms=4, min_cell_atoms=4, max_cell_atoms=8)
    z = {e.key: e.formula_units for e in enumerate_compositions(rules)}
    assert z["Cu"] == (4, 5, 6, 7, 8)
    assert z["CuAu"] == (2, 3, 4)
    assert z["CuAu3"] == (1, 2)


def test_ratio_cap_mg_ca_h():
    rules = CompositionRules(
        ("Mg", "Ca", "H"),
        max_counts={"Mg": 1, "Ca": 1},
        ratio_caps=[("H", ["Mg", "Ca"], 2)],
        max_cell_atoms=80,
    )
    space = enumerate_compositions(rules)
    for e in space:
        c = e.composition
        if c["Mg"] + c["Ca"] > 0:
            assert c["H"] <= 2 * (c["Mg"] + c["Ca"])
    keys = set(space.keys)
    assert {"MgH2", "CaH2", "CaMgH4", "MgH", "H", "Mg", "Ca"} <= keys
    assert "MgH3" not in keys and "CaMgH5" not in keys
    # by hand: (m, c) in {0,1}^2 minus (0,0): h in 0..2(m+c), irreducible, plus pure H
    expected = 1  # H
    for m in (0, 1):
        for c in (0, 1):
            if m + c:
                expected += 2 * (m + c) + 1
    assert len(space) == expected


def test_charge_neutral_be_p_n_o():
    rules = CompositionRules(
        ("Be", "P", "N", "O"),
        max_formula_atoms=12,
        charge_neutral=True,
        oxidation_states={"P": (5,), "N": (-3,)},
        include_elements=False,
        max_cell_atoms=40,
    )
    space = enumerate_compositions(rules)
    assert len(space) > 5
    ox = {"Be": 2, "P": 5, "N": -3, "O": -2}
    for e in space:
        assert sum(ox[el.symbol] * n for el, n in e.composition.items()) == 0, e.key
    keys = set(space.keys)
    assert {"BeO", "P2O5", "P3N5", "Be3N2", "BePNO2"} <= keys


def test_is_charge_neutral_uses_pymatgen_states():
    rules = CompositionRules(("Be", "P", "N", "O"), max_formula_atoms=5)
    states = {e: rules.states(e) for e in rules.elements}
    assert is_charge_neutral({"Be": 1, "O": 1}, states)
    assert not is_charge_neutral({"Be": 1, "O": 2}, states)
    assert is_charge_neutral({"P": 1, "N": 1}, states)  # P+3 N-3


def test_join_pseudo_ternary():
    rules = CompositionRules(
        ("Be", "P", "N", "O"),
        grid=False,
        include_elements=False,
        joins=[(("BeO", "P2O5", "P3N5"), 2)],
        max_cell_atoms=200,
    )
    space = enumerate_compositions(rules)
    keys = set(space.keys)
    # 1 BeO + 1 P2O5 = BeP2O6; 1 BeO + 1 P3N5 = BeP3N5O; 2 BeO + 1 P3N5 = Be2P3N5O2
    assert {"BeO", "P2O5", "P3N5", "BeP2O6", "BeP3N5O", "Be2P3N5O2"} <= keys
    # coefficients 0..2 for three end members: 26 nonzero vectors, some reduce to the same point
    for e in space:
        assert e.sources == ("join",)
    assert len(space) == len({Composition(k).reduced_formula for k in keys})
    # every join point is charge neutral with Be+2 P+5 N-3 O-2
    ox = {"Be": 2, "P": 5, "N": -3, "O": -2}
    for e in space:
        assert sum(ox[el.symbol] * n for el, n in e.composition.items()) == 0


def test_explicit_and_union_sources():
    rules = CompositionRules(
        ("Mg", "H"), max_formula_atoms=3, explicit=("MgH2", "Mg2H9"), max_cell_atoms=22
    )
    space = {e.key: e for e in enumerate_compositions(rules)}
    assert set(space["MgH2"].sources) == {"grid", "explicit"}
    assert space["Mg2H9"].sources == ("explicit",)
    assert space["Mg2H9"].formula_units == (1, 2)


def test_deterministic_order():
    kw = dict(
        elements=("Mg", "Ca", "H"),
        max_counts={"Mg": 2, "Ca": 2},
        ratio_caps=[RatioCap("H", ("Mg", "Ca"), 6)],
        max_cell_atoms=40,
    )
    a = enumerate_compositions(CompositionRules(**kw)).keys
    b = enumerate_compositions(CompositionRules(**kw)).keys
    assert a == b
    assert len(a) == len(set(a))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(elements=("Mg", "Xx"), max_formula_atoms=3), "unknown element 'Xx'"),
        (
            dict(elements=("Mg", "H"), min_counts={"H": 3}, max_counts={"H": 2, "Mg": 1}),
            "min_counts",
        ),
        (dict(elements=("Mg", "H"), max_counts={"Mg": 2}), "unbounded"),
        (
            dict(elements=("Mg", "H"), max_counts={"Mg": 2, "Ca": 1}, max_formula_atoms=4),
            "not in elements",
        ),
        (dict(elements=("Mg", "H"), max_formula_atoms=4, explicit=("CaH2",)), "not in elements"),
        (
            dict(elements=("Mg", "H"), max_formula_atoms=4, min_cell_atoms=5, max_cell_atoms=4),
            "min_cell_atoms",
        ),
        (
            dict(elements=("Mg", "H"), max_formula_atoms=4, ratio_caps=[("H", ["Mg"], -1)]),
            "max_ratio",
        ),
    ],
)
def test_bad_rules_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        CompositionRules(**kw)


def test_cap_that_excludes_everything_raises():
    rules = CompositionRules(
        ("Mg", "H"),
        min_counts={"Mg": 1, "H": 1},
        max_counts={"Mg": 2},
        ratio_caps=[("H", ["Mg"], 0)],
        include_elements=False,
    )
    with pytest.raises(ValueError, match="exclude every composition"):
        enumerate_compositions(rules)


def test_explicit_too_large_for_cell_raises():
    rules = CompositionRules(
        ("Mg", "H"), max_formula_atoms=3, explicit=("Mg2H9",), max_cell_atoms=8
    )
    with pytest.raises(ValueError, match="max_cell_atoms"):
        enumerate_compositions(rules)


def test_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(
        '[compositions]\nelements = ["Mg", "Ca", "H"]\nmax_counts = {Mg = 1, Ca = 1}\n'
        'ratio_caps = [{numerator = "H", denominators = ["Mg", "Ca"], max_ratio = 2}]\n'
        "max_cell_atoms = 20\n"
    )
    rules = load_rules(p)
    assert rules.ratio_caps[0] == RatioCap("H", ("Mg", "Ca"), 2.0)
    assert len(enumerate_compositions(rules)) == 12  # same space as test_ratio_cap_mg_ca_h
    with pytest.raises(ValueError, match="unknown key"):
        rules_from_mapping({"elements": ["Mg"], "max_atom": 3})
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "missing.toml")
