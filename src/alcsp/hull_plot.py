"""Convex-hull plots: binary, ternary, and pseudo-binary / pseudo-ternary sections of systems
with four or more elements; matplotlib PNG (``plot_hull``) and a self-contained interactive
plotly HTML page (``plot_hull_html``, plotly's JavaScript inlined: it works offline).

Both draw a ``HullView`` (``hull_view``), the geometry of one picture:

* **corners**: the end members of the section: the elements of a binary or ternary system,
  or compounds (a *join*, e.g. BeO–P2O5–P3N5 in Be–P–N–O).
* each composition inside the join is placed at its **weights** ``w`` (atom fractions of the
  end members, ``x = Σ_j w_j x_j`` in atom-fraction space, ``w ≥ 0``); compositions outside
  it are not drawn.
* its **ΔH** is the enthalpy relative to the end members, ``H - Σ_j w_j H_j`` (eV/atom; the
  formation enthalpy when the corners are the elements). The tie lines are the lower hull
  of ΔH over the end members and the phases in the join that are stable on the *full* hull
  (for a true join, its tie lines). Colours and the stable/near-hull marks are always
  E_hull against the full hull of every element, never against the section.

For four or more elements without a join given, ``choose_join`` picks one: among the triples
(then pairs) of phases stable on the full hull, the one whose plane holds the most stable,
then near-hull, compositions besides its corners, preferring joins whose end members together
contain every element (a real pseudo-ternary such as BeO–P2O5–P3N5 over a face such as
Be–P–O). When no join holds any composition besides its corners, the picture is a
projection: formation enthalpy against the atom fraction of each element, one panel each.

matplotlib and plotly are imported lazily (the ``plot`` extra), so ``alcsp.hull`` never
depends on them. Shape letters: M entries, C compositions, K elements, J corners, P points.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Composition

from alcsp.compositions import composition_key
from alcsp.hull import STABLE_TOL, HullResult

__all__ = ["HullView", "choose_join", "hull_view", "parse_join", "plot_hull", "plot_hull_html"]

#: Near-hull points annotated at most (the lowest E_hull first); the HTML shows all on hover.
MAX_NEAR_LABELS = 24
_TRI = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # ternary corners, [3, 2]


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


def _corner_fractions(result: HullResult, corners: Sequence[str]) -> np.ndarray:
    """Atom fractions of the end members, [J, K]; a clear error for foreign elements."""
    out = np.zeros((len(corners), len(result.elements)))
    for j, c in enumerate(corners):
        for el, x in Composition(c).fractional_composition.items():
            if el.symbol not in result.elements:
                raise ValueError(
                    f"join end member {c} contains {el.symbol}, outside the system "
                    f"{'-'.join(result.elements)}."
                )
            out[j, result.elements.index(el.symbol)] = x
    return out


def join_weights(
    result: HullResult, corners: Sequence[str], tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Weights of every composition on the join ``corners`` ([C, J], atom fractions of the
    end members) and whether it lies in the join ([C] bool: in their span, all w >= 0)."""
    f = _corner_fractions(result, corners)  # [J, K]
    x = _frac(result)  # [C, K]
    w, *_ = np.linalg.lstsq(f.T, x.T, rcond=None)  # [J, C]
    w = w.T  # [C, J]
    resid = np.linalg.norm(w @ f - x, axis=1)  # [C]
    inside = (resid < tol) & (w >= -tol).all(axis=1)
    w = np.clip(w, 0.0, None)
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0), inside


def parse_join(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"BeO,P2O5,P3N5"`` (or a sequence) -> composition keys; None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if len(parts) not in (2, 3):
        raise ValueError(f"a join has 2 or 3 end members (A,B or A,B,C), got {parts}.")
    try:
        keys = tuple(composition_key(p) for p in parts)
    except Exception as exc:  # pymatgen raises several types for a bad formula
        raise ValueError(f"join {parts}: not a formula ({exc}).") from exc
    if len(set(keys)) != len(keys):
        raise ValueError(f"join {parts}: the end members must be distinct compositions.")
    return keys


def _stable_keys(result: HullResult) -> list[str]:
    on = result.composition_e_hull <= STABLE_TOL
    return [k for k, s in zip(result.keys, on, strict=True) if s]


def choose_join(result: HullResult, window_mev: float = 50.0) -> tuple[str, ...] | None:
    """The join a 4+-element system is drawn on (see the module docstring), or None.

    Candidates are triples (then pairs) of stable compositions with independent atom-fraction
    vectors; each is scored by (holds any composition besides its corners, its end members
    contain every element, stable compositions inside, near-hull ones within ``window_mev``
    inside), ties broken by the sorted names, so the choice is deterministic.
    """
    stable = sorted(_stable_keys(result))
    e_c = result.composition_e_hull * 1000.0  # [C] meV/atom
    near = e_c <= window_mev + 1e-9
    on = e_c <= STABLE_TOL * 1000.0
    elements = set(result.elements)
    for size in (3, 2):
        best, best_score = None, None
        for corners in itertools.combinations(stable, size):
            f = _corner_fractions(result, corners)
            if np.linalg.matrix_rank(f, tol=1e-8) < size:
                continue
            _, inside = join_weights(result, corners)
            interior = inside & np.array([k not in corners for k in result.keys])
            spans = (
                set().union(*({e.symbol for e in Composition(c).elements} for c in corners))
                >= elements
            )
            score = (
                bool((interior & near).any()),
                spans,
                int((interior & on).sum()),
                int((interior & near).sum()),
            )
            if best_score is None or score > best_score:
                best, best_score = corners, score
        if best is not None and best_score is not None and best_score[0]:
            return tuple(best)
    return None


@dataclass
class HullView:
    """The geometry of one hull picture (see the module docstring).

    ``kind``: binary | ternary | projection. Arrays over the P points drawn (entries within
    the E_hull cap that lie in the join); ``xy`` are plot coordinates (binary: weight of the
    second corner and ΔH in meV/atom; ternary: Cartesian in the unit triangle; projection:
    unused).
    """

    kind: str
    corners: tuple[str, ...]
    pseudo: bool
    entries: np.ndarray  # [P] entry indices into the HullResult
    weights: np.ndarray  # [P, J]
    delta_h_mev: np.ndarray  # [P] relative to the corners
    e_hull_mev: np.ndarray  # [P] against the full hull
    stable: np.ndarray  # [P] bool: the best entry of a composition on the full hull
    near: np.ndarray  # [P] bool: the best entry of its composition, 0 < E_hull <= window
    xy: np.ndarray  # [P, 2]
    segments: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    n_outside: int = 0  # compositions of the system not in the join (not drawn)
    cap_mev: float = 200.0
    window_mev: float = 50.0


def _lower_hull_2d(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points (x, y), left to right (monotone chain)."""
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    out: list[int] = []
    for i in order:
        while len(out) >= 2:
            a, b = out[-2], out[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross <= 1e-12:
                out.pop()
            else:
                break
        if out and abs(x[out[-1]] - x[i]) < 1e-12:
            continue  # same x: the lower one came first
        out.append(i)
    return out


def _lower_hull_3d(uv: np.ndarray, z: np.ndarray) -> list[tuple[int, int]]:
    """Edges (index pairs) of the lower convex hull of points (u, v, z); [] if degenerate."""
    from scipy.spatial import ConvexHull, QhullError

    if len(z) < 4:
        return []
    try:
        hull = ConvexHull(np.column_stack([uv, z]))
    except (QhullError, ValueError):
        return []  # every point in one plane: no tie lines inside the triangle
    edges: set[tuple[int, int]] = set()
    for simplex, eq in zip(hull.simplices, hull.equations, strict=True):
        if eq[2] < -1e-9:  # outward normal pointing down: a lower facet
            for a, b in ((0, 1), (1, 2), (0, 2)):
                lo, hi = sorted((int(simplex[a]), int(simplex[b])))
                edges.add((lo, hi))
    return sorted(edges)


def hull_view(
    result: HullResult,
    *,
    join: Sequence[str] | str | None = None,
    max_e_hull_mev: float = 200.0,
    window_mev: float = 50.0,
) -> HullView:
    """The picture of ``result``: binary/ternary for 2/3 elements, the given ``join`` (2 or 3
    end members, any system), an automatic join for 4+ elements (``choose_join``), else a
    projection. Entries above ``max_e_hull_mev`` are left out."""
    k = len(result.elements)
    corners = parse_join(join) if join is not None else None
    if corners is None:
        if k in (2, 3):
            corners = tuple(result.elements)
        elif k >= 4:
            corners = choose_join(result, window_mev)
    e_mev = result.e_hull_mev
    best = np.zeros(len(e_mev), bool)
    best[result.best_index] = True
    stable_m = best & (result.e_hull <= STABLE_TOL)
    near_m = best & ~stable_m & (e_mev <= window_mev + 1e-9)
    cap = e_mev <= max_e_hull_mev + 1e-9
    if corners is None or k == 1:
        idx = np.nonzero(cap)[0]
        return HullView(
            "projection",
            tuple(result.elements),
            False,
            idx,
            _frac(result)[result.comp_index[idx]],
            result.formation[idx] * 1000,
            e_mev[idx],
            stable_m[idx],
            near_m[idx],
            np.zeros((len(idx), 2)),
            cap_mev=max_e_hull_mev,
            window_mev=window_mev,
        )
    _corner_fractions(result, corners)  # foreign elements first: the clearer message
    missing = [c for c in corners if c not in result.keys]
    if missing:
        have = ", ".join(sorted(_stable_keys(result)))
        raise ValueError(
            f"join end member(s) {missing} have no entry in this hull; give labelled "
            f"compositions, e.g. stable ones: {have}."
        )
    if np.linalg.matrix_rank(_corner_fractions(result, corners), tol=1e-8) < len(corners):
        raise ValueError(f"join {'-'.join(corners)}: the end members are not independent.")
    w_c, inside_c = join_weights(result, corners)  # [C, J], [C]
    h_corner = np.array(
        [result.enthalpy[result.best_index[result.keys.index(c)]] for c in corners]
    )  # [J]
    inside = inside_c[result.comp_index]  # [M]
    idx = np.nonzero(inside & cap)[0]
    w = w_c[result.comp_index[idx]]  # [P, J]
    dh = (result.enthalpy[idx] - w @ h_corner) * 1000  # [P] meV/atom
    pseudo = set(corners) != set(result.elements) or len(corners) != k
    binary = len(corners) == 2
    xy = np.column_stack([w[:, 1], dh]) if binary else w @ _TRI
    view = HullView(
        "binary" if binary else "ternary",
        tuple(corners),
        pseudo,
        idx,
        w,
        dh,
        e_mev[idx],
        stable_m[idx],
        near_m[idx],
        xy,
        n_outside=int((~inside_c).sum()),
        cap_mev=max_e_hull_mev,
        window_mev=window_mev,
    )
    # tie lines: lower hull of ΔH over the corners and the full-hull stable phases inside
    is_corner = np.array([result.keys[result.comp_index[i]] in corners for i in idx], bool)
    verts = np.nonzero(view.stable | (is_corner & best[idx]))[0]
    if binary:
        chain = _lower_hull_2d(xy[verts, 0], dh[verts])
        pts = [np.array([xy[verts[i], 0], dh[verts[i]]]) for i in chain]
        view.segments = list(itertools.pairwise(pts))
    else:
        edges = _lower_hull_3d(xy[verts], dh[verts] / 1000)
        view.segments = [(xy[verts[a]], xy[verts[b]]) for a, b in edges]
    return view


def _names(
    result: HullResult, view: HullView, labels: Mapping[int, str] | None
) -> tuple[list[str], list[str]]:
    """Composition key and extra label (e.g. the space group) of every point drawn."""
    keys = [result.keys[result.comp_index[i]] for i in view.entries]
    return keys, [(labels or {}).get(int(i), "") for i in view.entries]


def _near_to_label(view: HullView) -> np.ndarray:
    near = np.nonzero(view.near)[0]
    return near[np.argsort(view.e_hull_mev[near], kind="stable")][:MAX_NEAR_LABELS]


def _pretty(formula: str) -> str:
    """'P2O5' -> 'P$_2$O$_5$' for matplotlib."""
    import re

    return re.sub(r"(\d+(?:\.\d+)?)", r"$_{\1}$", formula)


def _pretty_symbol(symbol: str) -> str:
    """A Hermann–Mauguin symbol as printed: 'Im-3m' -> 'Im$\\bar{3}$m', 'P6_3/mmc' ->
    'P6$_3$/mmc' for matplotlib (other text unchanged)."""
    import re

    symbol = re.sub(r"-(\d)", r"$\\bar{\1}$", symbol)
    return re.sub(r"(\d)_(\d)", r"\1$_{\2}$", symbol)


def _caption(result: HullResult, view: HullView) -> str:
    if view.kind == "projection":
        return (
            f"{len(result.elements)} elements, no join holds a composition besides its "
            "end members: formation enthalpy against each element's atom fraction"
        )
    what = "pseudo-binary" if view.kind == "binary" else "pseudo-ternary"
    if not view.pseudo:
        return ""
    return (
        f"{what} join {'–'.join(view.corners)}; ΔH relative to the end members; "
        f"{view.n_outside} compositions outside the join not shown"
    )


def plot_hull(
    result: HullResult,
    path: str | Path,
    *,
    max_e_hull_mev: float = 200.0,
    window_mev: float | None = None,
    join: Sequence[str] | str | None = None,
    title: str | None = None,
    labels: Mapping[int, str] | None = None,
) -> Path:
    """Draw the hull to a PNG at ``path`` and return it.

    Stable points (the best entry of each on-hull composition) are black and annotated with
    ``labels[entry]`` (default: the composition; the report adds the space group); the best
    entry of each composition within ``window_mev`` (default ``max_e_hull_mev / 4``) is
    annotated with its E_hull; the others are coloured by E_hull up to ``max_e_hull_mev``
    (entries above it are left out). ``join``: see ``hull_view``.
    """
    window = max_e_hull_mev / 4 if window_mev is None else window_mev
    view = hull_view(result, join=join, max_e_hull_mev=max_e_hull_mev, window_mev=window)
    cap = _caption(result, view)
    if view.kind == "projection":
        fig = _projection_png(result, view)  # constrained layout (a shared colour bar)
        fig.supxlabel(cap, fontsize=7, color="0.3")
    else:
        fig = _section_png(view, *_names(result, view, labels))
        if cap:
            fig.text(0.5, 0.005, cap, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.suptitle(title or f"{'–'.join(result.elements)} convex hull", fontsize=10)
    if view.kind != "projection":
        fig.tight_layout(rect=(0, 0.03 if cap else 0, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=150)
    return path


def _legend_handles(view: HullView):
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], ls="", marker="o", mfc="k", mec="k", ms=6, label="on the hull (stable)"),
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            mfc="none",
            mec="tab:red",
            ms=7,
            mew=1.4,
            label=f"near hull (≤ {view.window_mev:.0f} meV/atom)",
        ),
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            mfc="tab:olive",
            mec="none",
            ms=4,
            label="other labels (colour: E$_{hull}$)",
        ),
        Line2D([], [], color="k", lw=1, label="tie lines" if view.kind == "ternary" else "hull"),
    ]


def _section_png(view: HullView, keys: list[str], extra: list[str]):
    binary = view.kind == "binary"
    fig = _figure((7.5, 5.2) if binary else (7.5, 6.8))
    ax = fig.add_subplot()
    order = np.argsort(-view.e_hull_mev)  # low E_hull drawn last (on top)
    sc = ax.scatter(
        view.xy[order, 0],
        view.xy[order, 1],
        c=view.e_hull_mev[order],
        s=12,
        cmap="viridis_r",
        vmin=0,
        vmax=view.cap_mev,
        zorder=3,
        lw=0,
    )
    for p0, p1 in view.segments:
        ax.plot([p0[0], p1[0]], [p0[1], p1[1]], "k-", lw=1.0, zorder=2)
    st, nr = np.nonzero(view.stable)[0], _near_to_label(view)
    ax.scatter(view.xy[st, 0], view.xy[st, 1], c="k", s=30, zorder=5)
    ax.scatter(
        view.xy[np.nonzero(view.near)[0], 0],
        view.xy[np.nonzero(view.near)[0], 1],
        facecolors="none",
        edgecolors="tab:red",
        s=42,
        lw=1.2,
        zorder=4,
    )
    off = (0, -9) if binary else (5, 5)
    corner_extra = {}
    for i in st:
        if not binary and keys[i] in view.corners:
            corner_extra[keys[i]] = extra[i]  # written under the corner's name instead
            continue
        text = _pretty(keys[i]) + (f"\n{_pretty_symbol(extra[i])}" if extra[i] else "")
        ax.annotate(
            text,
            view.xy[i],
            textcoords="offset points",
            xytext=off,
            ha="center" if binary else "left",
            va="top" if binary else "bottom",
            fontsize=7,
            zorder=6,
            linespacing=0.95,
        )
    for i in nr:
        ax.annotate(
            f"{_pretty(keys[i])} +{view.e_hull_mev[i]:.0f}",
            view.xy[i],
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=6.5,
            color="tab:red",
            zorder=6,
        )
    if binary:
        a, b = view.corners
        if view.pseudo:
            ax.set_xlabel(f"x in ({_pretty(a)})$_{{1-x}}$({_pretty(b)})$_x$ (atom fraction)")
            ax.set_ylabel(f"ΔH relative to {a} and {b} (meV/atom)")
        else:
            ax.set_xlabel(f"x in {a}$_{{1-x}}${b}$_x$")
            ax.set_ylabel("formation enthalpy (meV/atom)")
        ax.set_xlim(-0.03, 1.03)
        ax.margins(y=0.12)
        ax.axhline(0, color="0.6", lw=0.6, zorder=1)
    else:
        ax.plot(*np.vstack([_TRI, _TRI[:1]]).T, "k-", lw=1.2, zorder=2)
        for c, (x, y), ha, dy in zip(
            view.corners, _TRI, ("right", "left", "center"), (-0.05, -0.05, 0.03), strict=True
        ):
            sub = corner_extra.get(c)
            ax.text(
                x,
                y + dy,
                _pretty(c) + (f"\n{_pretty_symbol(sub)}" if sub else ""),
                ha=ha,
                va="top" if dy < 0 else "bottom",
                fontsize=9,
                fontweight="bold",
            )
        ax.set_xlim(-0.12, 1.12)
        ax.set_ylim(-0.14, np.sqrt(3) / 2 + 0.1)
        ax.set_aspect("equal")
        ax.axis("off")
    ax.legend(
        handles=_legend_handles(view),
        fontsize=7,
        framealpha=0.85,
        loc="best" if binary else "upper right",
    )
    fig.colorbar(sc, ax=ax, label="E$_{hull}$ (meV/atom)", shrink=0.8)
    return fig


def _projection_png(result: HullResult, view: HullView):
    k = len(result.elements)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig = _figure((3.2 * cols + 1, 3.0 * rows + 0.8))
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True)).ravel()
    sc = None
    for j, el in enumerate(result.elements):
        ax = axes[j]
        x = view.weights[:, j]
        sc = ax.scatter(
            x,
            view.delta_h_mev,
            c=view.e_hull_mev,
            s=10,
            cmap="viridis_r",
            vmin=0,
            vmax=view.cap_mev,
            lw=0,
        )
        st = view.stable
        ax.scatter(x[st], view.delta_h_mev[st], c="k", s=24)
        ax.scatter(
            x[view.near],
            view.delta_h_mev[view.near],
            facecolors="none",
            edgecolors="tab:red",
            s=36,
            lw=1.1,
        )
        ax.set_xlabel(f"atom fraction of {el}")
        ax.set_xlim(-0.02, 1.02)
        if j % cols == 0:
            ax.set_ylabel("formation enthalpy (meV/atom)")
    for ax in axes[k:]:
        ax.set_visible(False)
    axes[0].legend(handles=_legend_handles(view)[:3], fontsize=6.5, loc="best")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes[:k]), label="E$_{hull}$ (meV/atom)", shrink=0.8)
    return fig


def plot_hull_html(
    result: HullResult,
    path: str | Path,
    *,
    max_e_hull_mev: float = 200.0,
    window_mev: float | None = None,
    join: Sequence[str] | str | None = None,
    title: str | None = None,
    labels: Mapping[int, str] | None = None,
    hover: Mapping[int, str] | None = None,
) -> Path:
    """The interactive version of ``plot_hull``: one self-contained HTML page (plotly.js
    inlined, no network needed). ``hover[entry]``: extra lines (HTML) shown for a point."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise ValueError("interactive plots need plotly: pip install 'alcsp[plot]'.") from exc
    window = max_e_hull_mev / 4 if window_mev is None else window_mev
    view = hull_view(result, join=join, max_e_hull_mev=max_e_hull_mev, window_mev=window)
    keys, extra = _names(result, view, labels)
    names = [f"{k} {e}".strip() for k, e in zip(keys, extra, strict=True)]
    text = []
    for p, i in enumerate(view.entries):
        more = (hover or {}).get(int(i), f"entry {result.ids[i]}")
        text.append(
            f"<b>{names[p]}</b><br>{more}<br>E_hull "
            f"{view.e_hull_mev[p]:.1f} meV/atom<br>ΔH {view.delta_h_mev[p]:.1f} meV/atom"
        )
    text_a = np.array(text, dtype=object)
    marker = dict(
        color=view.e_hull_mev,
        colorscale="Viridis",
        reversescale=True,
        cmin=0,
        cmax=view.cap_mev,
        size=6,
        colorbar=dict(title="E_hull (meV/atom)"),
    )
    groups = [
        ("other labels", ~view.stable & ~view.near, marker),
        (
            f"near hull (≤ {view.window_mev:.0f} meV/atom)",
            view.near,
            dict(color="rgba(0,0,0,0)", size=10, line=dict(color="crimson", width=2)),
        ),
        ("on the hull (stable)", view.stable, dict(color="black", size=9)),
    ]
    fig = go.Figure()
    full_title = title or f"{'–'.join(result.elements)} convex hull"
    cap = _caption(result, view)
    if view.kind == "binary":
        xs, ys = [], []
        for p0, p1 in view.segments:
            xs += [p0[0], p1[0], None]
            ys += [p0[1], p1[1], None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name="hull",
                line=dict(color="black", width=1),
                hoverinfo="skip",
            )
        )
        for name, m, mk in groups:
            fig.add_trace(
                go.Scatter(
                    x=view.xy[m, 0],
                    y=view.xy[m, 1],
                    mode="markers",
                    name=name,
                    marker=mk,
                    text=text_a[m],
                    hoverinfo="text",
                    cliponaxis=False,
                )
            )
        st = np.nonzero(view.stable)[0]
        fig.add_trace(
            go.Scatter(
                x=view.xy[st, 0],
                y=view.xy[st, 1],
                mode="text",
                text=[names[i] for i in st],
                textposition="bottom center",
                showlegend=False,
                hoverinfo="skip",
                cliponaxis=False,
            )
        )
        a, b = view.corners
        fig.update_layout(
            xaxis_title=f"x in ({a})1-x({b})x" if view.pseudo else f"x in {a}1-x {b}x",
            yaxis_title=(
                f"ΔH relative to {a} and {b} (meV/atom)"
                if view.pseudo
                else "formation enthalpy (meV/atom)"
            ),
        )
    elif view.kind == "ternary":
        # plotly: a at the top, b bottom left, c bottom right (corners 2, 0, 1 here)
        def abc(w):
            return dict(a=w[:, 2], b=w[:, 0], c=w[:, 1])

        seg_w = []
        for p0, p1 in view.segments:
            seg_w += [_cart_to_w(p0), _cart_to_w(p1), [None] * 3]
        if seg_w:
            cols = list(zip(*seg_w, strict=True))
            fig.add_trace(
                go.Scatterternary(
                    a=cols[2],
                    b=cols[0],
                    c=cols[1],
                    mode="lines",
                    name="tie lines",
                    hoverinfo="skip",
                    line=dict(color="black", width=1),
                )
            )
        for name, m, mk in groups:
            fig.add_trace(
                go.Scatterternary(
                    **abc(view.weights[m]),
                    mode="markers",
                    name=name,
                    marker=mk,
                    text=text_a[m],
                    hoverinfo="text",
                    cliponaxis=False,
                )
            )
        st = np.nonzero(view.stable)[0]
        fig.add_trace(
            go.Scatterternary(
                **abc(view.weights[st]),
                mode="text",
                text=[names[i] for i in st],
                textposition="top right",
                showlegend=False,
                hoverinfo="skip",
                cliponaxis=False,
            )
        )
        c0, c1, c2 = view.corners
        fig.update_layout(
            ternary=dict(aaxis=dict(title=c2), baxis=dict(title=c0), caxis=dict(title=c1))
        )
    else:
        from plotly.subplots import make_subplots

        k = len(result.elements)
        fig = make_subplots(
            rows=1,
            cols=k,
            shared_yaxes=True,
            subplot_titles=[f"atom fraction of {e}" for e in result.elements],
        )
        for j in range(k):
            for name, m, mk in groups:
                fig.add_trace(
                    go.Scatter(
                        x=view.weights[m, j],
                        y=view.delta_h_mev[m],
                        mode="markers",
                        name=name,
                        marker=mk,
                        text=text_a[m],
                        hoverinfo="text",
                        showlegend=j == 0,
                    ),
                    row=1,
                    col=j + 1,
                )
        fig.update_yaxes(title_text="formation enthalpy (meV/atom)", row=1, col=1)
    fig.update_layout(
        title=dict(text=full_title + (f"<br><sub>{cap}</sub>" if cap else ""), x=0.5),
        template="plotly_white",
        legend=dict(orientation="h", y=-0.12),
        height=700,
    )
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True, include_mathjax=False)
    return path


def _cart_to_w(p: np.ndarray) -> list[float]:
    """Cartesian point of the unit triangle -> weights of corners 0, 1, 2."""
    w2 = p[1] / (np.sqrt(3) / 2)
    w1 = p[0] - 0.5 * w2
    return [1 - w1 - w2, w1, w2]
