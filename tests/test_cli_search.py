"""CLI tests for ``alcsp compositions``, ``alcsp generate`` and ``alcsp hull``."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from pymatgen.core import Composition

from alcsp.cli import main


def test_compositions(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text(
        '[compositions]\nelements = ["Mg", "Ca", "H"]\nmax_counts = {Mg = 1, Ca = 1}\n'
        'ratio_caps = [{numerator = "H", denominators = ["Mg", "Ca"], max_ratio = 2}]\n'
        "max_cell_atoms = 12\n"
    )
    assert main(["compositions", str(p)]) == 0
    out = capsys.readouterr().out
    assert "12 irreducible compositions" in out
    assert "CaMgH4" in out and "z=1,2" in out


@pytest.mark.parametrize(
    "body, msg",
    [
        ('elements = ["Mg", "Qq"]\nmax_formula_atoms = 3\n', "unknown element 'Qq'"),
        (
            'elements = ["Mg", "H"]\nmin_counts = {H = 4}\nmax_counts = {H = 2, Mg = 1}\n',
            "min_counts",
        ),
        ('elements = ["Mg", "H"]\nmax_formula_atoms = 3\nmax_atoms = 4\n', "unknown key"),
    ],
)
def test_compositions_bad_config(tmp_path, capsys, body, msg):
    p = tmp_path / "bad.toml"
    p.write_text("[compositions]\n" + body)
    assert main(["compositions", str(p)]) == 2
    err = capsys.readouterr().err
    assert "alcsp compositions: error:" in err and msg in err


def test_generate(tmp_path, capsys):
    out = tmp_path / "out.extxyz"
    args = [
        "generate",
        "--composition",
        "MgCa2H10",
        "--count",
        "3",
        "--pressure",
        "300",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    structs = read(out, index=":")
    assert len(structs) == 3
    for s in structs:
        assert Composition(s.get_chemical_formula()) == Composition("MgCa2H10")
        assert "space_group" in s.info
    first = [s.positions.copy() for s in structs]
    assert main(args) == 0  # same seed, same set
    for a, b in zip(first, read(out, index=":"), strict=True):
        np.testing.assert_allclose(a, b.positions, atol=1e-6)
    assert main(["generate", "--composition", "MgZz2", "--out", str(out)]) == 2
    assert "unknown element" in capsys.readouterr().err


def test_generate_impossible_reports_reason(tmp_path, capsys):
    out = tmp_path / "x.extxyz"
    rc = main(
        [
            "generate",
            "--composition",
            "Cu3",
            "--space-groups",
            "225",
            "--count",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    io = capsys.readouterr()
    assert "no allowed space group" in io.out and "could be made" in io.err
    assert not out.exists()


def _labelled(tmp_path):
    """Cu-Au structures with EMT energies: a real hull."""
    structs = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08)]
    cuau = bulk("Cu", "fcc", a=3.85, cubic=True)
    cuau.numbers[[1, 2]] = 79  # L1_0-like CuAu
    structs.append(cuau)
    cu3au = bulk("Cu", "fcc", a=3.75, cubic=True)
    cu3au.numbers[0] = 79  # L1_2 Cu3Au
    structs.append(cu3au)
    for s in structs:
        s.calc = EMT()
        e = s.get_potential_energy()
        s.calc = SinglePointCalculator(s, energy=e)
    p = tmp_path / "cuau.extxyz"
    write(p, structs)
    return p


def test_hull(tmp_path, capsys):
    p = _labelled(tmp_path)
    png = tmp_path / "hull.png"
    assert main(["hull", str(p), "--pressure", "0", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "stable phases:" in out and "system Cu-Au" in out
    assert png.stat().st_size > 1000
    # at high pressure PV enters: enthalpies change, still a valid table
    assert main(["hull", str(p), "--pressure", "20"]) == 0
    assert "E_hull" in capsys.readouterr().out


def test_hull_reference_and_errors(tmp_path, capsys):
    p = _labelled(tmp_path)
    structs = read(p, index=":")
    ref = tmp_path / "ref.extxyz"
    write(ref, structs[:2])  # elements as reference phases
    cands = tmp_path / "c.extxyz"
    write(cands, structs[2:])
    assert main(["hull", str(cands), "--reference", str(ref)]) == 0
    assert "(reference)" in capsys.readouterr().out
    # a CIF of a known phase carries no energy: give its enthalpy per atom
    cif = tmp_path / "au.cif"
    write(cif, bulk("Au", "fcc", a=4.08))
    h_au = float(structs[1].get_potential_energy()) / len(structs[1])
    rc = main(["hull", str(cands), "--reference", str(ref), f"{cif}={h_au - 0.01}"])
    assert rc == 0 and "au.cif:0" in capsys.readouterr().out
    assert main(["hull", str(cands), "--reference", f"{cif}=abc"]) == 2
    assert "must be a number" in capsys.readouterr().err
    assert main(["hull", str(cands), "--reference", str(cif)]) == 2
    assert "no energy" in capsys.readouterr().err
    assert main(["hull", str(cands)]) == 2  # no pure elements: the hull needs terminals
    assert "no entry for element" in capsys.readouterr().err
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert main(["hull", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["hull", str(tmp_path / "missing.extxyz")]) == 2
    noenergy = tmp_path / "noe.extxyz"
    write(noenergy, [bulk("Cu", "fcc", a=3.6)])
    assert main(["hull", str(noenergy)]) == 2
    assert "no energy" in capsys.readouterr().err
