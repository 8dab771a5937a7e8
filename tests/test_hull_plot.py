import numpy as np
import pytest

from alcsp.hull import build_hull


def test_binary_and_ternary_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from alcsp.hull_plot import plot_hull

    res = build_hull(["Cu", "Au", "CuAu", "Cu3Au"], [0.0, 0.0, -0.5, -0.1])
    p = plot_hull(res, tmp_path / "bin.png")
    assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    rng = np.random.default_rng(0)
    comps = ["Mg", "Ca", "H", "MgH2", "CaH6", "CaMgH4", "Ca2MgH8", "MgCa"]
    res3 = build_hull(comps, [0, 0, 0, *rng.normal(-0.3, 0.1, size=5)])
    p3 = plot_hull(res3, tmp_path / "ter.png")
    assert p3.stat().st_size > 1000
    res4 = build_hull(["Be", "P", "N", "O"], [0.0] * 4)
    with pytest.raises(ValueError, match="binary and ternary"):
        plot_hull(res4, tmp_path / "q.png")
