"""Convex-hull plots (binary line plot, ternary triangle). matplotlib is imported lazily here,
so ``alcsp.hull`` never depends on it (install the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Composition

from alcsp.hull import HullResult

__all__ = ["plot_hull"]


def _figure(size: tuple[float, float]):
    """A matplotlib Figure that is not registered with pyplot (no global backend state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # the plot extra is optional
        raise ValueError("plotting needs matplotlib: pip install 'alcsp[plot]'.") from exc
    return Figure(figsize=size)


def _frac(result: HullResult) -> np.ndarray:
    """Atom fractions of each composition, [C, K] in result.elements order."""
    out = np.zeros((len(result.keys), len(result.elements)))
    for i, k in enumerate(result.keys):
        for el, x in Composition(k).fractional_composition.items():
            out[i, result.elements.index(el.symbol)] = x
    return out


def plot_hull(result: HullResult, path: str | Path, *, max_e_hull_mev: float = 200.0) -> Path:
    """Draw the hull of a binary (line plot) or ternary (triangle) system to ``path``.

    Entries above ``max_e_hull_mev`` are left out of the picture. Returns the path written.
    """
    k = len(result.elements)
    if k not in (2, 3):
        raise ValueError(f"plot_hull draws binary and ternary systems; this one has {k} elements.")
    frac = _frac(result)  # [C, K]
    keep = result.e_hull_mev <= max_e_hull_mev  # [M]
    stable = result.stable_indices
    fig = _figure((6, 4.5) if k == 2 else (6, 5.5))
    ax = fig.add_subplot()
    if k == 2:
        x = frac[result.comp_index, 1]  # [M]
        sc = ax.scatter(
            x[keep],
            result.formation[keep] * 1000,
            c=result.e_hull_mev[keep],
            s=12,
            cmap="viridis_r",
            vmin=0,
            vmax=max_e_hull_mev,
        )
        o = np.argsort(x[stable])
        ax.plot(x[stable][o], result.formation[stable][o] * 1000, "k-o", ms=5, lw=1.2)
        for i in stable:
            ax.annotate(
                result.keys[result.comp_index[i]],
                (x[i], result.formation[i] * 1000),
                textcoords="offset points",
                xytext=(0, -12),
                ha="center",
                fontsize=8,
            )
        ax.set_xlabel(f"x in {result.elements[0]}$_{{1-x}}${result.elements[1]}$_x$")
        ax.set_ylabel("formation enthalpy (meV/atom)")
        ax.set_xlim(0, 1)
    else:
        # barycentric -> Cartesian: corner 0 at (0, 0), corner 1 at (1, 0), corner 2 at top
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # [3, 2]
        xy = frac @ corners  # [C, 2]
        pts = xy[result.comp_index]  # [M, 2]
        ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=1)
        for facet in result.phase_diagram.facets:
            qs = [result.phase_diagram.qhull_entries[j] for j in facet]
            fxy = (
                np.array(
                    [[q.composition.get_atomic_fraction(e) for e in result.elements] for q in qs]
                )
                @ corners
            )
            ax.plot(*np.vstack([fxy, fxy[:1]]).T, "k-", lw=0.6, alpha=0.7)
        sc = ax.scatter(
            pts[keep, 0],
            pts[keep, 1],
            c=result.e_hull_mev[keep],
            s=10,
            cmap="viridis_r",
            vmin=0,
            vmax=max_e_hull_mev,
            zorder=3,
        )
        ax.scatter(pts[stable, 0], pts[stable, 1], c="k", s=25, zorder=4)
        for i in stable:
            ax.annotate(
                result.keys[result.comp_index[i]],
                pts[i],
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        ax.set_aspect("equal")
        ax.axis("off")
    fig.colorbar(sc, ax=ax, label="E$_{hull}$ (meV/atom)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    return path
