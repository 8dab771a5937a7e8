import re

import numpy as np
import pytest

from alcsp.hull import build_hull

pytest.importorskip("matplotlib")

# Be–P–N–O by hand: the BeO–P2O5–P3N5 join holds Be3P2O8, BeP2N2O3 and PNO (stable) and
# BePO3 (not in the join); Be3N2 and Be2P are off it.
BEPNO = {
    "Be": 0.0,
    "P": 0.0,
    "N": 0.0,
    "O": 0.0,
    "BeO": -3.0,
    "P2O5": -2.0,
    "P3N5": -1.0,
    "Be3N2": -1.5,
    "PON": -1.8,
    "BeP2N2O3": -2.3,
    "Be3P2O8": -2.7,
    "Be2P": -0.3,
    "BePO3": -2.0,
    "BeN2O": -0.5,
}


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def _bepno(extra: dict | None = None):
    d = {**BEPNO, **(extra or {})}
    keys = list(d) + ["BeO", "P2O5"]  # polymorphs above the best
    return build_hull(keys, [*d.values(), -2.95, -1.96])


def test_binary_plot(tmp_path):
    from alcsp.hull_plot import hull_view, plot_hull, plot_hull_html

    res = build_hull(
        ["Cu", "Au", "CuAu", "Cu3Au", "CuAu", "CuAu3"], [0.0, 0.0, -0.5, -0.4, -0.47, -0.1]
    )
    view = hull_view(res, window_mev=50)
    assert view.kind == "binary" and not view.pseudo and view.corners == tuple(res.elements)
    # the hull: Cu, Cu3Au, CuAu, Au in order, ΔH the formation enthalpy
    xs = [a[0] for a, _ in view.segments] + [view.segments[-1][1][0]]
    assert np.allclose(sorted(xs), xs) and len(view.segments) == 3
    assert np.allclose(view.delta_h_mev, res.formation[view.entries] * 1000)
    assert set(np.array(res.keys)[res.comp_index[view.entries[view.stable]]]) == set(
        res.stable_keys
    )
    near = view.entries[view.near]  # CuAu's second polymorph is not a composition's best
    assert [res.keys[res.comp_index[i]] for i in near] == []
    p = plot_hull(res, tmp_path / "bin.png", title="Cu–Au", labels={2: "P4/mmm"})
    assert _png(p)
    pytest.importorskip("plotly")
    h = plot_hull_html(res, tmp_path / "bin.html", title="Cu–Au")
    assert not re.search(r"<script[^>]+src=", h.read_text()) and "Cu–Au" in h.read_text()


def test_ternary_plot_tie_lines_are_the_hull_facets(tmp_path):
    from alcsp.hull_plot import _cart_to_w, hull_view, plot_hull, plot_hull_html

    rng = np.random.default_rng(0)
    comps = ["Mg", "Ca", "H", "MgH2", "CaH6", "CaMgH4", "Ca2MgH8", "MgCa", "CaH2"]
    res = build_hull(comps, [0, 0, 0, *rng.normal(-0.3, 0.1, size=6)])
    view = hull_view(res)
    assert view.kind == "ternary" and not view.pseudo
    edges = {
        frozenset(res.phase_diagram.qhull_entries[j].composition.reduced_formula for j in pair)
        for facet in res.phase_diagram.facets
        for pair in ((facet[0], facet[1]), (facet[1], facet[2]), (facet[0], facet[2]))
    }
    pos = {
        res.keys[res.comp_index[i]]: view.xy[p]
        for p, i in enumerate(view.entries)
        if view.stable[p]
    }

    def name(xy):
        return next(k for k, v in pos.items() if np.allclose(v, xy))

    from pymatgen.core import Composition

    drawn = {frozenset(Composition(name(p)).reduced_formula for p in s) for s in view.segments}
    assert drawn == edges
    assert np.allclose(_cart_to_w(view.xy[0]), view.weights[0])
    assert _png(plot_hull(res, tmp_path / "ter.png"))
    pytest.importorskip("plotly")
    assert "scatterternary" in plot_hull_html(res, tmp_path / "ter.html").read_text()


def test_four_elements_pseudo_ternary(tmp_path):
    from alcsp.hull_plot import choose_join, hull_view, plot_hull, plot_hull_html

    res = _bepno()
    assert choose_join(res, 50) == ("BeO", "P2O5", "P3N5")
    view = hull_view(res, window_mev=50)
    assert view.kind == "ternary" and view.pseudo
    names = [res.keys[res.comp_index[i]] for i in view.entries]
    assert set(names) == {"BeO", "P2O5", "P3N5", "PNO", "BeP2N2O3", "Be3P2O8"}
    assert view.n_outside == len(res.keys) - 6
    # Be3P2O8 = 3 BeO + P2O5: 6 of its 13 atoms from BeO, 7 from P2O5
    k = names.index("Be3P2O8")
    assert np.allclose(view.weights[k], [6 / 13, 7 / 13, 0])
    assert view.delta_h_mev[k] == pytest.approx((-2.7 - (6 * -3.0 + 7 * -2.0) / 13) * 1000)
    assert _png(plot_hull(res, tmp_path / "q.png", title="Be–P–N–O"))
    # the same system on a pseudo-binary join given by hand
    b = hull_view(res, join="BeO, P2O5")
    assert b.kind == "binary" and b.corners == ("BeO", "P2O5")
    assert {res.keys[res.comp_index[i]] for i in b.entries} == {"BeO", "P2O5", "Be3P2O8"}
    assert len(b.segments) == 2  # BeO – Be3P2O8 – P2O5
    assert _png(plot_hull(res, tmp_path / "qb.png", join=["BeO", "P2O5"]))
    pytest.importorskip("plotly")
    page = plot_hull_html(res, tmp_path / "q.html").read_text()
    assert "BeP2N2O3" in page and not re.search(r"<script[^>]+src=", page)


def test_four_elements_without_a_join_is_a_projection(tmp_path):
    from alcsp.hull_plot import hull_view, plot_hull, plot_hull_html

    res = build_hull(["Be", "P", "N", "O", "BePNO"], [0.0, 0.0, 0.0, 0.0, 0.2])
    view = hull_view(res)
    assert view.kind == "projection" and view.weights.shape == (5, 4)
    assert _png(plot_hull(res, tmp_path / "p.png"))
    pytest.importorskip("plotly")
    assert plot_hull_html(res, tmp_path / "p.html").stat().st_size > 1_000_000


def test_bad_joins_are_named():
    from alcsp.hull_plot import hull_view, parse_join

    res = _bepno()
    with pytest.raises(ValueError, match="no entry"):
        hull_view(res, join="BeO,P2O5,BeP4")
    with pytest.raises(ValueError, match="outside the system"):
        hull_view(res, join="BeO,CaO")
    with pytest.raises(ValueError, match="not independent"):
        hull_view(res, join="BeO,Be3P2O8,P2O5")
    with pytest.raises(ValueError, match="2 or 3 end members"):
        parse_join("BeO")
    assert parse_join("P2O5, BeO") == ("P2O5", "BeO")


def test_space_group_symbols_are_printed_with_bars_and_subscripts(tmp_path):
    """The PNG writes Hermann–Mauguin symbols as printed (Im3̄m, P6₃/mmc), not as spglib's
    ASCII; matplotlib's mathtext must parse each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alcsp.hull_plot import _pretty_symbol

    cases = {
        "Im-3m": r"Im$\bar{3}$m",
        "P6_3/mmc": r"P6$_{3}$/mmc",
        "I4_1/amd": r"I4$_{1}$/amd",
        "P-6m2": r"P$\bar{6}$m2",
        "P4/mmm": "P4/mmm",
    }
    assert {k: _pretty_symbol(k) for k in cases} == cases
    fig, ax = plt.subplots()
    for k, text in enumerate(cases.values()):
        ax.text(0.1, 0.1 * k, text)
    fig.savefig(tmp_path / "symbols.png")  # raises on a mathtext error
    plt.close(fig)
