"""The report's sections from the analysis results stored under ``DIR/analysis`` by
``alcsp analyse``: "Hydrogen cages" from ``cages.json``, and "Electronic structure" and
"T_c estimates" from ``electronic.json`` and ``tc.json`` (``--what electronic,tc``).

Each section shows the structures of the last finished run, with E_hull as it was then;
without a finished run, every result of the settings stored last. A section is empty ("")
when its results were never stored.

Cages: the structures with their cages, then the structures grouped by cage prototype.

Electronic structure: for each structure, a figure like Fig. 7 of Belli et al. (2021), the
band structure along the standard path beside the total DOS and the element PDOS (energies
relative to E_F, DOS in states/eV per cell); then a table of gaps, N(E_F) and H_DOS, and,
for the hydrides, the T_c estimate against E_hull (like their Fig. 5, with the fit's ±60 K
as error bars) and its table. The PNGs are written into the report folder and embedded in
the HTML (base64), so the page stays self-contained.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from alcsp.analysis.cages import group_by_prototype
from alcsp.analysis.electronic import ElectronicStructure, element_order
from alcsp.analysis.results import (
    LastRun,
    StoredCages,
    cages_path,
    electronic_path,
    load_keyed,
    load_stored,
    tc_path,
)
from alcsp.analysis.tc import DISCLAIMER, REFERENCE, TcEstimate

_T = TypeVar("_T")

# ------------------------------------------------------------------ shared by the sections


def _select(
    results: dict[str, dict[int, _T]], last: LastRun | None
) -> tuple[str, dict[int, _T], LastRun | None] | None:
    """The settings key, entries and last run to show: the last finished run's, else the
    settings stored last, with no run (None when nothing is stored)."""
    if not results:
        return None
    if last is not None and last.settings_key in results:
        return last.settings_key, results[last.settings_key], last
    key = list(results)[-1]
    return key, results[key], None


def _shown(entries: Mapping[int, object], last: LastRun | None) -> list[tuple[int, float | None]]:
    """The structures to show, in order, with E_hull (meV/atom) as the last run saw it:
    the last run's rows that are stored, or every entry by id with None for E_hull."""
    if last is not None:
        return [(sid, e) for sid, e in last.rows if sid in entries]
    return [(sid, None) for sid in sorted(entries)]


def _intro(last: LastRun | None) -> str:
    """The sentence that says which structures a section shows."""
    if last is None:
        return "Every stored structure (no <code>alcsp analyse</code> run has finished)."
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.finished))
    return (
        f"Structures within E_hull ≤ {last.ehull * 1000:.0f} meV/atom when "
        f"<code>alcsp analyse</code> last ran ({when}; E_hull as it was then)."
    )


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _table(head: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _e_hull(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ---------------------------------------------------------------------- hydrogen cages


def cage_section(directory: Path) -> str:
    """HTML of the stored cage analysis (empty when ``alcsp analyse`` never stored one):
    the structures of the last finished run with their cages, then the structures grouped
    by cage prototype. Without a finished run, every result of the settings stored last."""
    if not cages_path(directory).exists():
        return ""
    results, last_run = load_stored(Path(directory))
    found = _select(results, last_run)
    if found is None:
        return ""
    key, stored, last = found
    rows = [(stored[sid], e) for sid, e in _shown(stored, last)]
    shown = {s.structure_id: s for s, _ in rows}
    return "".join(
        [
            "<h2>Hydrogen cages</h2>",
            f"<p>{_intro(last)} Settings: <code>{html.escape(key)}</code>.</p>",
            _cage_table(rows),
            "<h3>Structures by cage prototype</h3>",
            _groups_table(shown),
        ]
    )


def _cage_table(rows: Sequence[tuple[StoredCages, float | None]]) -> str:
    head = (
        "composition",
        "structure",
        "E_hull (meV/atom)",
        "space group",
        "cages",
        "caged fraction",
        "clathrate",
        "bond cutoff (Å)",
    )
    cells = [
        (
            s.composition,
            s.structure_id,
            _e_hull(e),
            s.space_group,
            "; ".join(s.analysis.descriptions) or "-",
            f"{s.analysis.caged_fraction:.2f}",
            "yes" if s.analysis.is_clathrate else "no",
            f"{s.analysis.bond_cutoff:.2f}",
        )
        for s, e in rows
    ]
    return _table(head, cells)


def _groups_table(stored: dict[int, StoredCages]) -> str:
    groups = group_by_prototype({sid: s.analysis for sid, s in stored.items()})
    if not groups:
        return "<p>(no cages)</p>"
    body = "".join(
        "<tr>"
        + _cell(p.label)
        + _cell(len(ids))
        + _cell(", ".join(f"{stored[i].composition} ({i})" for i in ids))
        + "</tr>"
        for p, ids in groups.items()
    )
    return (
        "<table><tr><th>prototype</th><th>structures</th><th>composition (id)</th></tr>"
        f"{body}</table>"
    )


# ------------------------------------------------------- electronic structure and T_c

#: Energy window of the band/DOS figures, eV around E_F.
WINDOW = (-12.0, 6.0)


def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - the report checks this first
        raise ValueError("reports need matplotlib: pip install 'alcsp[plot]'") from exc
    return Figure


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def bands_dos_figure(es: ElectronicStructure, title: str, path: Path) -> Path:
    """Bands (left) and total + element-projected DOS (right) of one structure, PNG."""
    figure = _figure()
    fig = figure(figsize=(8.0, 4.2))
    ax_b, ax_d = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [2.2, 1]})
    x = np.asarray(es.bands.x)
    for spin in es.bands.energies:
        for band in spin.T:
            ax_b.plot(x, band, color="k", lw=0.8)
    for lx in es.bands.label_x:
        ax_b.axvline(lx, color="0.7", lw=0.6)
    ax_b.axhline(0.0, color="tab:red", lw=0.8, ls="--")
    ax_b.set_xticks(es.bands.label_x)
    ax_b.set_xticklabels(["Γ" if lab == "G" else lab for lab in es.bands.labels])
    ax_b.set_xlim(x[0], x[-1])
    ax_b.set_ylim(*WINDOW)
    ax_b.set_ylabel("E − E_F (eV)")
    gap = "metal" if es.is_metal else f"{es.gap_kind} gap {es.gap:.2f} eV"
    ax_b.set_title(f"{title}: {gap}", fontsize=10)
    e = es.dos_energies
    ax_d.plot(es.dos_total, e, color="k", lw=1.0, label="total")
    for symbol in element_order(list(es.pdos)):
        ax_d.plot(es.pdos[symbol], e, lw=1.0, label=symbol)
    ax_d.axhline(0.0, color="tab:red", lw=0.8, ls="--")
    inside = (e >= WINDOW[0]) & (e <= WINDOW[1])
    top = max(float(es.dos_total[inside].max(initial=0.0)), 1e-3)
    ax_d.set_xlim(0, 1.05 * top)
    ax_d.set_xlabel("DOS (states/eV/cell)")
    h = "" if es.h_dos is None else f", H_DOS {es.h_dos:.2f}"
    ax_d.set_title(f"N(E_F) {es.dos_at_fermi_per_atom:.3f}/eV/atom{h}", fontsize=9)
    ax_d.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def tc_figure(points: list[tuple[str, float, float]], path: Path) -> Path:
    """T_c estimate (K, ±60 K error bars) against E_hull (meV/atom) of the hydrides, PNG;
    ``points`` are (label, E_hull, T_c)."""
    figure = _figure()
    fig = figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    e = np.array([p[1] for p in points])
    tc = np.array([p[2] for p in points])
    ax.errorbar(e, tc, yerr=60.0, fmt="o", color="tab:blue", ecolor="0.6", capsize=3)
    for label, x, y in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("E_hull (meV/atom)")
    ax.set_ylabel("T_c estimate (K)")
    ax.set_title("Belli et al. (2021) estimate, ±60 K; not Eliashberg", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _last(path: Path, what: str) -> tuple[str, dict[int, dict], LastRun | None] | None:
    """The settings key, entries and last run to show (None when nothing is stored)."""
    if not path.exists():
        return None
    results, last = load_keyed(path, what)
    return _select(results, last)


def electronic_sections(directory: Path, out: Path) -> str:
    """HTML of the stored electronic structure and T_c estimates ("" when ``alcsp analyse
    --what electronic/tc`` never stored one), its PNGs written into ``out``."""
    directory, out = Path(directory), Path(out)
    found = _last(electronic_path(directory), "electronic")
    if found is None:
        return ""
    key, entries, last = found
    order = _shown(entries, last)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        "<h2>Electronic structure</h2>",
        f"<p>{_intro(last)} GPAW with the campaign's oracle settings; bands along the standard "
        "path of each cell, DOS by linear tetrahedra, element PDOS inside the PAW spheres. "
        f"Settings: <code>{html.escape(key)}</code>.</p>",
    ]
    rows: list[tuple[object, ...]] = []
    figures: list[str] = []
    for sid, e_hull in order:
        entry: dict[str, Any] = entries[sid]
        es = ElectronicStructure.from_json(entry["result"])
        title = f"{entry['composition']} ({sid})"
        png = bands_dos_figure(es, title, out / f"electronic_{sid}.png")
        figures.append(_img(png))
        rows.append(
            (
                entry["composition"],
                sid,
                _e_hull(e_hull),
                entry["space_group"],
                f"{es.gap:.3f}",
                es.gap_kind,
                f"{es.dos_at_fermi_per_atom:.4f}",
                "-" if es.h_dos is None else f"{es.h_dos:.3f}",
            )
        )
    parts.append(
        _table(
            (
                "composition",
                "structure",
                "E_hull (meV/atom)",
                "space group",
                "gap (eV)",
                "kind",
                "N(E_F) (states/eV/atom)",
                "H_DOS",
            ),
            rows,
        )
    )
    parts += figures
    parts.append(_tc_section(directory, out, dict(order)))
    return "".join(parts)


def _tc_section(directory: Path, out: Path, e_hull: dict[int, float | None]) -> str:
    found = _last(tc_path(directory), "tc")
    if found is None:
        return ""
    key, entries, last = found
    shown = [sid for sid, _ in _shown(entries, last)]
    rows: list[tuple[object, ...]] = []
    points: list[tuple[str, float, float]] = []
    for sid in shown:
        entry = entries[sid]
        est = TcEstimate.from_json(entry["result"])
        eh = e_hull.get(sid)
        rows.append(
            (
                entry["composition"],
                sid,
                _e_hull(eh),
                f"{est.phi:.3f}",
                f"{est.h_fraction:.3f}",
                f"{est.h_dos:.3f}",
                f"{est.phi_dos:.3f}",
                f"{est.tc:.0f} ± {est.sigma:.0f}",
            )
        )
        if eh is not None:
            points.append((f"{entry['composition']} ({sid})", eh, est.tc))
    parts = [
        "<h2>T<sub>c</sub> estimates</h2>",
        f"<p class='warning'>These are estimates, {html.escape(DISCLAIMER)}.</p>",
        f"<p>{html.escape(REFERENCE)}. φ: the highest ELF isovalue at which the ELF ≥ φ "
        "region percolates in 3D through a hydrogen atom (GPAW pseudo-valence ELF); H_f: "
        "hydrogen fraction of the atoms; H_DOS: hydrogen fraction of the projected DOS at "
        f"E_F. Settings: <code>{html.escape(key)}</code>.</p>",
        _table(
            (
                "composition",
                "structure",
                "E_hull (meV/atom)",
                "φ",
                "H_f",
                "H_DOS",
                "Φ_DOS",
                "T_c estimate (K)",
            ),
            rows,
        ),
    ]
    if points:
        parts.append(_img(tc_figure(points, out / "tc_vs_ehull.png")))
    return "".join(parts)
