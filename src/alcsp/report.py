"""Campaign reports: learning curves (the paper's Fig. 3), the hull, tables of stable and
near-hull phases, oracle cost per iteration — one self-contained HTML file plus PNGs.

Everything is read from the store; nothing is computed that the campaign did not record,
except the hull of the labels (cheap) and space groups (spglib). matplotlib is imported
lazily and only through ``matplotlib.figure.Figure`` (no pyplot global state).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import spglib

from alcsp.campaign import LabelledHull, labelled_hull
from alcsp.config import parse_config
from alcsp.store import CampaignStore


@dataclass
class PhaseRow:
    structure_id: int
    composition: str
    formula: str
    space_group: str
    e_hull_mev: float
    formation_mev: float
    source: str  # origin and iteration of the label

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def space_group(atoms, symprec: float = 0.1) -> str:
    """International symbol and number from spglib, e.g. 'Pm-3m (221)'."""
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        return "?"
    return f"{data.international} ({data.number})"


def phase_table(lh: LabelledHull, max_e_hull: float) -> list[PhaseRow]:
    """The best structure of each composition within ``max_e_hull`` eV/atom, stable first."""
    rows = []
    for i in lh.hull.best_index:
        if lh.hull.e_hull[i] > max_e_hull + 1e-12:
            continue
        atoms = lh.structures[lh.kept[i]]
        rows.append(PhaseRow(
            structure_id=lh.structure_id(i),
            composition=lh.hull.keys[lh.hull.comp_index[i]],
            formula=atoms.get_chemical_formula(),
            space_group=space_group(atoms),
            e_hull_mev=float(lh.hull.e_hull[i] * 1000),
            formation_mev=float(lh.hull.formation[i] * 1000),
            source=f"{atoms.info.get('origin', '?')}, iteration {atoms.info.get('iteration', '?')}",
        ))  # fmt: skip
    return sorted(rows, key=lambda r: (r.e_hull_mev, r.composition))


def _figure(size):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ValueError("reports need matplotlib: pip install 'alcsp[plot]'") from exc
    return Figure(figsize=size)


def learning_curves(iterations: list[dict], path: Path) -> Path:
    """Fig. 3: RMSE of model n on the labels of iteration n (E, F, stress), structures
    optimised per iteration."""
    its = [it for it in iterations if it["iteration"] >= 1]
    x = [it["iteration"] for it in its]
    val = [it["counts"].get("validation") or {} for it in its]
    fig = _figure((10, 7))
    axes = fig.subplots(2, 2).ravel()
    series = [
        ("energy_mev_per_atom", "energy RMSE (meV/atom)"),
        ("force_mev_per_a", "force RMSE (meV/Å)"),
        ("stress_gpa", "stress RMSE (GPa)"),
    ]
    for ax, (key, label) in zip(axes[:3], series, strict=True):
        ax.plot(x, [v.get(key, np.nan) for v in val], "o-")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.set_yscale("log")
    axes[3].bar(x, [it["counts"].get("relaxations", 0) for it in its], color="tab:gray")
    axes[3].set_xlabel("iteration")
    axes[3].set_ylabel("structures optimised")
    fig.suptitle("model of iteration n against the oracle labels of iteration n")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def oracle_cost(store: CampaignStore) -> list[dict]:
    rows = store.conn.execute(
        "SELECT iteration, COUNT(*), SUM(ok), SUM(wall_time) FROM labels "
        "GROUP BY iteration ORDER BY iteration"
    ).fetchall()
    return [
        {
            "iteration": it,
            "jobs": n,
            "ok": int(ok or 0),
            "failed": n - int(ok or 0),
            "wall_time_s": float(t or 0.0),
        }
        for it, n, ok, t in rows
    ]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(
            f"<td>{html.escape(f'{v:.2f}' if isinstance(v, float) else str(v))}</td>"
            for v in r.values()
        ) + "</tr>"
        for r in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(directory: Path, out: Path | None = None, max_e_hull: float | None = None) -> Path:
    """Write ``report.html`` (self-contained) and its PNGs into ``out`` (default
    DIR/report). Returns the HTML path."""
    from alcsp.commands.status import summary
    from alcsp.hull_plot import plot_hull

    out = out or directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    info = summary(directory)
    with CampaignStore.open(directory, readonly=True) as store:
        cfg = parse_config(store.config_text, source=f"{directory} config")
        window = cfg.campaign.report_ehull if max_e_hull is None else max_e_hull
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
        cost = oracle_cost(store)
    parts = [f"<h1>alcsp campaign {html.escape(cfg.campaign.name)}</h1>",
             f"<p>{html.escape(', '.join(cfg.elements))} at {cfg.campaign.pressure} GPa; "
             f"oracle {html.escape(cfg.oracle.name)}; {info['labels']} labels "
             f"(+{info['label_failures']} failed), {info['relaxations']} ACNN relaxations, "
             f"alcsp {html.escape(str(info['version']))}</p>"]  # fmt: skip
    parts += [f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in info["warnings"]]
    parts.append(f"<p>Every hull here uses the {html.escape(info['energy'])}.</p>")
    if info["stop_reason"]:
        rule = sorted({cfg.selection.for_iteration(it["iteration"]).rule
                       for it in info["iterations"] if it["iteration"] > 0})  # fmt: skip
        parts.append(f"<p>Search stopped: {html.escape(info['stop_reason'])}. Selection "
                     f"rule: {html.escape(', '.join(rule) or '-')}.</p>")  # fmt: skip
    curves = learning_curves(info["iterations"], out / "learning_curves.png")
    parts += ["<h2>Learning curves</h2>", _img(curves)]
    if lh is not None:
        parts.append("<h2>Convex hull (oracle labels)</h2>")
        if len(lh.hull.elements) in (2, 3):
            hull_png = plot_hull(lh.hull, out / "hull.png", max_e_hull_mev=max(window * 1000, 1))
            parts.append(_img(hull_png))
        else:
            parts.append(
                f"<p>{len(lh.hull.elements)} elements: no hull plot (binary and "
                "ternary only); see the table.</p>"
            )
        rows = phase_table(lh, window)
        parts += [
            f"<h2>Stable and near-hull phases (E_hull ≤ {window * 1000:.0f} meV/atom)</h2>",
            _table([r.as_dict() for r in rows]),
        ]
        (out / "phases.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    parts += ["<h2>Oracle cost per iteration</h2>", _table(cost)]
    parts += ["<h2>Oracle calls per stage</h2>",
              _table([{"stage": k, "calls": v} for k, v in info["oracle_calls"].items()])]
    if info["oracle_relaxations"]:
        parts += ["<h2>Oracle relaxations</h2>", _table(info["oracle_relaxations"])]
    parts += ["<h2>Iterations</h2>", _table([
        {"iteration": it["iteration"], "finished": it["finished"],
         "relaxed": it["counts"].get("relaxations", 0),
         "unphysical": it["counts"].get("unphysical", 0),
         "labelled": it["counts"].get("labelled", 0),
         "stable": ", ".join(it["stable"])}
        for it in info["iterations"]])]  # fmt: skip
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}.warning{color:#a00;font-weight:bold}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>alcsp report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path
