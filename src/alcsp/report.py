"""Campaign reports: learning curves (the paper's Fig. 3), the hull, tables of stable and
near-hull phases, compute and oracle cost — one self-contained HTML file plus PNGs and an
interactive hull page (docs/report.md says what each part shows).

Everything is read from the store; computed here are only the hull of the labels (cheap),
space groups (spglib), and the errors of each iteration's model on that iteration's labels
(the stored models evaluated again, so that near-hull minima and unconverged/unphysical
labels can be shown apart, with a median per-structure error beside the RMSE). matplotlib is
imported lazily and only through ``matplotlib.figure.Figure`` (no pyplot global state).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import spglib

from alcsp.config import parse_config
from alcsp.store import CampaignStore, IterationCounts
from alcsp.store.hulls import ENERGY_DEFINITION, LabelledHull, labelled_hull
from alcsp.units import EV_PER_A3_IN_GPA
from alcsp.vocab import Origin, RelaxStatus

#: g/cm³ per amu/Å³
_DENSITY = 1.66053906660

#: A section of the report: called with the campaign directory, returns an HTML fragment.
Section = Callable[[Path], str]


@dataclass
class PhaseRow:
    structure_id: int
    composition: str
    formula: str
    space_group: str
    e_hull_mev: float
    formation_mev: float
    source: str  # origin and iteration of the label
    volume_per_atom: float = math.nan  # Å³/atom
    density: float = math.nan  # g/cm³

    def as_dict(self) -> dict:
        return self.__dict__.copy()


#: (field, header, format) of the phase table in the HTML report
PHASE_COLUMNS = (
    ("structure_id", "Structure id", "{}"),
    ("composition", "Composition", "{}"),
    ("formula", "Cell formula", "{}"),
    ("space_group", "Space group", "{}"),
    ("e_hull_mev", "E<sub>hull</sub> (meV/atom)", "{:.1f}"),
    ("formation_mev", "Formation enthalpy (meV/atom)", "{:.1f}"),
    ("volume_per_atom", "Volume (Å³/atom)", "{:.2f}"),
    ("density", "Density (g/cm³)", "{:.3f}"),
    ("source", "Origin", "{}"),
)


def space_group(atoms, symprec: float = 0.1) -> str:
    """International symbol and number from spglib, e.g. 'Pm-3m (221)'."""
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        return "?"
    return f"{data.international} ({data.number})"


def origin_text(atoms) -> str:
    """Where a label's structure came from, in words."""
    origin, it = atoms.info.get("origin", "?"), atoms.info.get("iteration", "?")
    words = {
        "initial": "random, iteration 0",
        "relaxed": f"ACNN minimum, iteration {it}",
        "trust_frame": f"ACNN trust frame, iteration {it}",
        "oracle_relaxed": "oracle-relaxed",
        "reference_phase": "reference phase",
        "import": "imported",
    }
    return words.get(origin, f"{origin}, iteration {it}")


def phase_table(lh: LabelledHull, max_e_hull: float) -> list[PhaseRow]:
    """The best structure of each composition within ``max_e_hull`` eV/atom, stable first."""
    rows = []
    for i in lh.hull.best_index:
        if lh.hull.e_hull[i] > max_e_hull + 1e-12:
            continue
        atoms = lh.structures[lh.kept[i]]
        rows.append(
            PhaseRow(
                structure_id=lh.structure_id(i),
                composition=lh.hull.keys[lh.hull.comp_index[i]],
                formula=atoms.get_chemical_formula(),
                space_group=space_group(atoms),
                e_hull_mev=float(lh.hull.e_hull[i] * 1000),
                formation_mev=float(lh.hull.formation[i] * 1000),
                source=origin_text(atoms),
                volume_per_atom=float(atoms.get_volume() / len(atoms)),
                density=float(atoms.get_masses().sum() / atoms.get_volume() * _DENSITY),
            )
        )
    return sorted(rows, key=lambda r: (r.e_hull_mev, r.composition))


def polymorph_rows(
    lh: LabelledHull, max_e_hull: float, per_composition: int = 0, dedup: Any = None
) -> list[PhaseRow]:
    """The distinct structures of each composition within ``max_e_hull`` eV/atom of the
    hull, lowest first, at most ``per_composition`` of each (0: all); sorted by
    composition's best E_hull, then E_hull. Duplicates (``alcsp.dedup``, the campaign's
    ``[dedup]`` tolerances ``dedup``: the same structure labelled twice, an ACNN minimum
    and its oracle relaxation when they coincide) count once, as their lowest label."""
    from alcsp.dedup import DedupConfig, Deduplicator, fingerprint

    hull = lh.hull
    dd = Deduplicator(dedup or DedupConfig())
    chosen: dict[int, list[int]] = {}
    for i in np.argsort(hull.e_hull, kind="stable"):
        if hull.e_hull[i] > max_e_hull + 1e-12:
            break
        c = int(hull.comp_index[i])
        if per_composition and len(chosen.get(c, [])) >= per_composition:
            continue
        atoms = lh.structures[lh.kept[i]]
        cfg = dd.config.fingerprint
        if dd.add(str(i), hull.keys[c], float(hull.formation[i]), fingerprint(atoms, cfg)):
            continue  # a duplicate of a lower one
        chosen.setdefault(c, []).append(int(i))
    rows = []
    for c in sorted(chosen, key=lambda c: (hull.e_hull[chosen[c][0]], hull.keys[c])):
        for i in chosen[c]:
            atoms = lh.structures[lh.kept[i]]
            rows.append(
                PhaseRow(
                    structure_id=lh.structure_id(i),
                    composition=hull.keys[c],
                    formula=atoms.get_chemical_formula(),
                    space_group=space_group(atoms),
                    e_hull_mev=float(hull.e_hull[i] * 1000),
                    formation_mev=float(hull.formation[i] * 1000),
                    source=origin_text(atoms),
                    volume_per_atom=float(atoms.get_volume() / len(atoms)),
                    density=float(atoms.get_masses().sum() / atoms.get_volume() * _DENSITY),
                )
            )
    return rows


def _figure(size):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ValueError("reports need matplotlib: pip install 'alcsp[plot]'") from exc
    return Figure(figsize=size)


# ----------------------------------------------------------------- learning curves

#: label groups of the learning curves: near-hull minima, and the rest of the selection
GROUPS = ("minima", "failures")
GROUP_NAMES = {"minima": "near-hull minima", "failures": "unconverged / unphysical"}


def _errors(model, structures: Sequence, batch_size: int = 16) -> list[tuple]:
    """Per structure: (ΔE/N eV/atom, ΔF components [3n] eV/Å, Δσ components [9] GPa or
    None) of ``model`` against the labels."""
    from alcsp.potential.forces import ACNNPotential
    from alcsp.potential.io import labels_of
    from alcsp.structures import StructureBatch

    pot = ACNNPotential(model, skin=0.0)
    out = []
    for start in range(0, len(structures), batch_size):
        chunk = list(structures[start : start + batch_size])
        batch = StructureBatch.from_atoms(chunk, dtype=pot.dtype)
        pred = pot.compute(batch)
        e = pred.energy.detach().cpu().double().numpy()  # [S]
        f = pred.forces.detach().cpu().double().numpy()  # [N, 3]
        s = pred.stress.detach().cpu().double().numpy()  # [S, 3, 3]
        ptr = batch.ptr.cpu().numpy()
        for k, atoms in enumerate(chunk):
            lab = labels_of(atoms, start + k)
            df = (f[ptr[k] : ptr[k + 1]] - lab.forces).ravel()
            ds = None
            if lab.stress is not None and np.all(np.isfinite(lab.stress)):
                ds = ((s[k] - lab.stress) * EV_PER_A3_IN_GPA).ravel()
            out.append(((e[k] - lab.energy) / len(atoms), df, ds))
    return out


def _stats(errs: list[tuple]) -> dict:
    """RMSE over every value (as ``alcsp.potential.evaluate``: energy per atom, force and
    stress components) and the median over structures of each structure's own error (|ΔE/N|,
    RMS of its force components, RMS of its stress components: a per-component median would
    be ~0 wherever symmetry zeroes the forces). Energy meV/atom, force meV/Å, stress GPa."""
    if not errs:
        return {"n": 0}
    e = np.array([x[0] for x in errs]) * 1000  # [S]
    f = [x[1] * 1000 for x in errs]
    s = [x[2] for x in errs if x[2] is not None]

    def rms(v):
        return float(np.sqrt(np.mean(v**2))) if len(v) else math.nan

    def med(v):
        return float(np.median(v)) if len(v) else math.nan

    return {
        "n": len(errs),
        "energy_rmse": rms(e),
        "energy_median": med(np.abs(e)),
        "force_rmse": rms(np.concatenate(f)),
        "force_median": med([rms(v) for v in f]),
        "stress_rmse": rms(np.concatenate(s)) if s else math.nan,
        "stress_median": med([rms(v) for v in s]),
    }


def label_errors(store: CampaignStore, oracle: str) -> dict[int, dict]:
    """Iteration n -> errors of model n on the labels of iteration n, per group: near-hull
    ``minima`` (labels of converged ACNN relaxations) and ``failures`` (max_steps and
    unphysical relaxations, trust frames), and ``all``; ``source`` says "evaluated" or
    "stored" (the model file is gone: only the stored RMSE over all labels is known)."""
    labels = [a for a in store.training_set(oracle) if a.info["iteration"] >= 1]
    if not labels:
        return {}
    rel = store.relaxations()
    status = {int(s): str(t) for s, t in zip(rel.structure_id, rel.status, strict=True)}
    models = {rec.iteration: rec for rec in store.models()}  # the last of each iteration
    by_it: dict[int, list] = {}
    for a in labels:
        by_it.setdefault(int(a.info["iteration"]), []).append(a)
    out: dict[int, dict] = {}
    for n, atoms in sorted(by_it.items()):
        rec = models.get(n)
        path = store.model_path(rec) if rec is not None else None
        if path is None or not path.exists():
            out[n] = {"source": "stored"}
            continue
        from alcsp.potential import load_model

        errs = _errors(load_model(path), atoms)
        group: dict[str, list] = {g: [] for g in GROUPS}
        for a, err in zip(atoms, errs, strict=True):
            ok = (
                a.info["origin"] != Origin.TRUST_FRAME
                and status.get(int(a.info["structure_id"]), RelaxStatus.CONVERGED)
                == RelaxStatus.CONVERGED
            )
            group["minima" if ok else "failures"].append(err)
        out[n] = {
            "source": "evaluated",
            "all": _stats(errs),
            **{g: _stats(v) for g, v in group.items()},
        }
    return out


def learning_curves(iterations: list[dict], path: Path, errors: dict | None = None) -> Path:
    """Fig. 3: errors of model n on the labels of iteration n (energy, force, stress; RMSE
    and median per-structure error, near-hull minima apart from unconverged/unphysical),
    and the structures optimised per iteration by outcome."""
    from matplotlib.ticker import MaxNLocator

    errors = errors or {}
    its = [it for it in iterations if it["iteration"] >= 1]
    counts = [IterationCounts.from_json(it["counts"]) for it in its]
    x = np.array([it["iteration"] for it in its], dtype=int)
    fig = _figure((11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    series = [
        ("energy", "energy error (meV/atom)", "energy_mev_per_atom"),
        ("force", "force error (meV/Å)", "force_mev_per_a"),
        ("stress", "stress error (GPa)", "stress_gpa"),
    ]
    style = {"minima": ("tab:blue", "o"), "failures": ("tab:red", "s")}
    for ax, (key, label, stored) in zip(axes[:3], series, strict=True):
        drawn = False
        for g in GROUPS:
            color, mk = style[g]
            for stat, ls, fill in (("rmse", "-", color), ("median", "--", "none")):
                y = np.array(
                    [errors.get(int(n), {}).get(g, {}).get(f"{key}_{stat}", np.nan) for n in x],
                    dtype=float,
                )
                if np.isfinite(y).any():
                    name = f"{GROUP_NAMES[g]}, {'RMSE' if stat == 'rmse' else 'median'}"
                    ax.plot(x, y, ls=ls, marker=mk, color=color, mfc=fill, label=name)
                    drawn = True
        # iterations whose model file is gone: the RMSE stored at the time, all labels
        old = [
            (n, getattr(c.validation, stored) if c.validation else np.nan)
            for n, c in zip(x, counts, strict=True)
            if errors.get(int(n), {}).get("source") != "evaluated"
        ]
        old = [(n, v) for n, v in old if v is not None and np.isfinite(v)]
        if old:
            ax.plot(
                *zip(*old, strict=True),
                "x:",
                color="0.4",
                label="all new labels, RMSE (stored; model file gone)",
            )
            drawn = True
        ax.set_ylabel(label)
        if drawn:
            ax.set_yscale("log")
            ax.legend(fontsize=6.5)
        else:
            ax.text(
                0.5,
                0.5,
                "no labels from iterations ≥ 1 yet",
                transform=ax.transAxes,
                ha="center",
                color="0.4",
            )
    bottom = np.zeros(len(x))
    for key, color, name in (
        ("converged", "tab:green", "converged"),
        ("max_steps", "tab:orange", "max steps reached"),
        ("unphysical", "tab:red", "unphysical"),
    ):
        v = np.array([getattr(c, key) for c in counts], dtype=float)
        axes[3].bar(x, v, bottom=bottom, color=color, label=name, width=0.7)
        bottom += v
    # campaigns from before the per-status counts: the total only
    rest = np.array([c.relaxations for c in counts], dtype=float) - bottom
    if (rest > 0).any():
        axes[3].bar(
            x,
            np.clip(rest, 0, None),
            bottom=bottom,
            color="0.6",
            width=0.7,
            label="outcome not recorded",
        )
    axes[3].set_ylabel("structures optimised (ACNN)")
    if len(x):
        axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("iteration n")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x):
            ax.set_xlim(x.min() - 0.6, x.max() + 0.6)
    axes[0].set_title("model n on the oracle labels of iteration n", fontsize=9)
    axes[3].set_title("relaxations per iteration, by outcome", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------- cost


def oracle_cost(store: CampaignStore) -> list[dict]:
    return [
        {
            "iteration": c.iteration,
            "jobs": c.jobs,
            "ok": c.ok,
            "failed": c.failed,
            "wall_time_s": c.wall_time,
        }
        for c in store.label_cost()
    ]


#: What the core-hours of ``compute_time`` count, in the words of the report.
CORE_HOURS_NOTE = (
    "counted, one core per second of wall time: each iteration's ACNN training (its "
    "committee included) and search stages (the iterations' stored timings), and every "
    "oracle job's own wall time (single points of iterations >= 0, all attempts; oracle "
    "relaxations, their final labels once). Not counted: selection and deduplication "
    "(stored only together with the labelling wall time), iteration 0's structure "
    "generation, the final stage's bookkeeping, threads beyond one per process, committee "
    "members training in parallel, and the cores of a multi-core (MPI) oracle job beyond one."
)


def compute_time(store: CampaignStore, iterations: list[dict]) -> dict:
    """Seconds per stage from what the store records (rows: stage, seconds, counted in the
    core-hours), and the core-hours they add up to (``CORE_HOURS_NOTE``)."""
    t = {
        k: sum(float((it.get("timings") or {}).get(k, 0.0)) for it in iterations)
        for k in ("train", "search", "select_label")
    }
    labels, relax = store.oracle_wall_time()
    rows = [
        ("ACNN training (committee included)", t["train"], True),
        ("ACNN search (relaxations)", t["search"], True),
        ("selection + oracle labelling, driver wall time", t["select_label"], False),
        ("oracle single points (sum of job wall times)", labels, True),
        *(
            (f"oracle relaxations, {k} stage (sum of job wall times)", float(v or 0), True)
            for k, v in sorted(relax.items())
        ),
    ]
    core_s = sum(s for _, s, counted in rows if counted)
    return {"rows": rows, "core_hours": core_s / 3600.0}


# ----------------------------------------------------------------- HTML


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _cell(v, fmt: str = "{}") -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if fmt == "{}":
            fmt = "{:.2f}"
    return html.escape(fmt.format(v))


def _table(rows: list[dict], columns: Sequence[tuple[str, str, str]] | None = None) -> str:
    """An HTML table; ``columns``: (key, header HTML, format) (default: every key, as is)."""
    if not rows:
        return "<p>(none)</p>"
    cols = columns or [(k, html.escape(k), "{}") for k in rows[0]]
    head = "".join(f"<th>{h}</th>" for _, h, _ in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(k), f)}</td>" for k, _, f in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _header(cfg, info: dict, store: CampaignStore, cost: dict) -> str:
    from alcsp import __version__

    rules = []
    for start, sel in cfg.selection.steps.items():
        if start == 0 and 1 in cfg.selection.steps:
            continue  # iteration 0 is the initial labelling: no selection
        rules.append(
            f"from iteration {max(start, 1)}: rule {sel.rule}, C_max {sel.c_max}, "
            f"L_max {sel.l_max}, B_max {sel.b_max}"
            + (", + unconverged" if sel.include_unconverged else "")
            + (", + unphysical" if sel.include_unphysical else "")
            + (f", κ {sel.kappa}" if sel.uses_committee else "")
        )
    created = store.meta("created") or ""
    try:
        created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(created)))
    except (TypeError, ValueError):
        pass
    done = sum(1 for it in info["iterations"] if it["iteration"] >= 1 and it["finished"])
    calls = info["oracle_calls"]
    items = [
        ("System", "–".join(cfg.elements)),
        ("Pressure", f"{cfg.campaign.pressure:g} GPa"),
        ("Oracle", cfg.oracle.name),
        ("Energy on every hull", info["energy"]),
        ("Seed", str(cfg.campaign.seed)),
        ("alcsp version", f"campaign created with {info['version']}, report by {__version__}"),
        ("Created", str(created or "?")),
        ("Iterations finished", f"{done} (max_iterations {cfg.campaign.max_iterations})"),
        ("Search stopped", info["stop_reason"] or "not yet (running or interrupted)"),
        ("Selection rule", "; ".join(rules) or "–"),
        (
            "Oracle calls",
            f"{sum(calls.values())} (" + ", ".join(f"{k} {v}" for k, v in calls.items()) + ")",
        ),
        ("Core-hours", f"{cost['core_hours']:.3g} (what is counted: see Compute time)"),
        (
            "Labels",
            f"{info['labels']} (+{info['label_failures']} failed), "
            f"{info['relaxations']} ACNN relaxations, {info['models']} models",
        ),
    ]
    dl = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return (
        f"<table class='header'>{dl}</table>"
        "<details><summary>Campaign config (the TOML stored in the campaign)</summary>"
        f"<pre>{html.escape(store.config_text, quote=False)}</pre></details>"
    )


def _hull_join(cfg, lh: LabelledHull, join) -> tuple[tuple[str, ...] | None, str]:
    """The join to draw and why: the caller's, the config's first 2- or 3-member join of
    [compositions] (4+ elements), else None (hull_plot chooses)."""
    from alcsp.hull_plot import choose_join, parse_join

    if join is not None:
        return parse_join(join), "as asked (join)"
    if len(lh.hull.elements) < 4:
        return None, ""
    for j in cfg.compositions.joins:
        if len(j.end_members) in (2, 3):
            keys = parse_join(j.end_members)
            if keys is not None and all(k in lh.hull.keys for k in keys):
                return keys, "the first join of the config's [compositions]"
    chosen = choose_join(lh.hull, cfg.campaign.report_ehull * 1000)
    why = (
        "chosen among the stable phases: the join holding the most stable, then "
        "near-hull, compositions, preferring end members that span every element"
    )
    return chosen, why if chosen else "no join holds a composition besides its end members"


def _hull_section(cfg, lh: LabelledHull, out: Path, window: float, join) -> list[str]:
    from alcsp.hull_plot import plot_hull, plot_hull_html

    res = lh.hull
    cap_mev = max(3 * window * 1000, 100.0)
    window_mev = window * 1000
    e = res.e_hull_mev
    labels, hover = {}, {}
    for i in np.nonzero(e <= cap_mev + 1e-9)[0]:
        atoms = lh.structures[lh.kept[i]]
        sg = space_group(atoms)
        if e[i] <= window_mev + 1e-9:
            labels[int(i)] = sg.split(" (")[0]
        hover[int(i)] = (
            f"structure {lh.structure_id(int(i))}, {html.escape(sg)}<br>"
            f"{html.escape(origin_text(atoms))}"
        )
    chosen, why = _hull_join(cfg, lh, join)
    title = (
        f"{'–'.join(res.elements)} at {cfg.campaign.pressure:g} GPa · oracle "
        f"{cfg.oracle.name} · H = E0 + PV per atom"
    )
    kw: dict[str, Any] = dict(
        max_e_hull_mev=cap_mev, window_mev=window_mev, join=chosen, title=title, labels=labels
    )
    parts = ["<h2>Convex hull (oracle labels)</h2>"]
    png = plot_hull(res, out / "hull.png", **kw)
    if why:
        shown = "–".join(chosen) if chosen else "a projection"
        parts.append(
            f"<p>{len(res.elements)} elements: drawn on {html.escape(shown)} "
            f"({html.escape(why)}).</p>"
        )
    parts.append(_img(png))
    try:
        page = plot_hull_html(res, out / "hull.html", hover=hover, **kw)
        parts.append(
            f"<p><a href='{page.name}'>Interactive hull</a> (plotly, self-contained: "
            "hover a point for its structure, space group and E<sub>hull</sub>).</p>"
        )
    except ValueError as exc:  # plotly not installed
        parts.append(f"<p>No interactive hull: {html.escape(str(exc))}</p>")
    parts.append(
        f"<p class='caption'>Black: stable (on the hull), with space groups; red rings: the "
        f"best structure of each composition within {window_mev:.0f} meV/atom of the hull "
        f"(labelled with E<sub>hull</sub>); colours: E<sub>hull</sub> of every label up to "
        f"{cap_mev:.0f} meV/atom (those above are not drawn).</p>"
    )
    return parts


def _learning_table(errors: dict) -> str:
    rows = []
    for n, e in sorted(errors.items()):
        for g in GROUPS:
            s = e.get(g) or {}
            if not s.get("n"):
                continue
            rows.append(
                {
                    "iteration": n,
                    "group": GROUP_NAMES[g],
                    "n": s["n"],
                    **{k: s[k] for k in s if k != "n"},
                }
            )
    cols = [
        ("iteration", "Iteration", "{}"),
        ("group", "Labels", "{}"),
        ("n", "Count", "{}"),
        ("energy_rmse", "E RMSE (meV/atom)", "{:.1f}"),
        ("energy_median", "E median (meV/atom)", "{:.1f}"),
        ("force_rmse", "F RMSE (meV/Å)", "{:.0f}"),
        ("force_median", "F median (meV/Å)", "{:.0f}"),
        ("stress_rmse", "σ RMSE (GPa)", "{:.2f}"),
        ("stress_median", "σ median (GPa)", "{:.2f}"),
    ]
    return _table(rows, cols)


def _extra(directory: Path, fn: Section) -> str:
    try:
        return str(fn(directory))
    except Exception as exc:  # a broken section must not cost the rest of the report
        name = getattr(fn, "__name__", repr(fn))
        return (
            f"<h2>{html.escape(name)}</h2><p class='warning'>This section failed: "
            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"
        )


def write_report(
    directory: Path,
    out: Path | None = None,
    max_e_hull: float | None = None,
    *,
    join: str | Sequence[str] | None = None,
    extra_sections: Sequence[Section] | None = None,
) -> Path:
    """Write ``report.html`` (self-contained), its PNGs, ``hull.html`` (interactive),
    ``phases.json`` and ``learning_curves.json`` into ``out`` (default DIR/report); return
    the HTML path.

    ``max_e_hull`` (eV/atom): the near-hull window (default ``[campaign] report_ehull``).
    ``join``: end members of the hull picture, e.g. "BeO,P2O5,P3N5" (default: see
    ``alcsp.hull_plot``). ``extra_sections``: functions ``(directory) -> str`` whose HTML
    fragments are appended, in order (a section that raises shows its error instead).
    """
    from alcsp.store.summary import summary

    out = out or directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    info = summary(directory)
    with CampaignStore.open(directory, readonly=True) as store:
        cfg = parse_config(store.config_text, source=f"{directory} config")
        window = cfg.campaign.report_ehull if max_e_hull is None else max_e_hull
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
        cost = oracle_cost(store)
        errors = label_errors(store, cfg.oracle.name)
        ctime = compute_time(store, info["iterations"])
        header = _header(cfg, info, store, ctime)
    parts = [
        f"<h1>alcsp campaign {html.escape(cfg.campaign.name)}</h1>",
        f"<p>{html.escape(', '.join(cfg.elements))} at {cfg.campaign.pressure} GPa; "
        f"oracle {html.escape(cfg.oracle.name)}; {info['labels']} labels "
        f"(+{info['label_failures']} failed), {info['relaxations']} ACNN relaxations, "
        f"alcsp {html.escape(str(info['version']))}</p>",
        header,
    ]
    parts += [f"<p class='warning'>Warning: {html.escape(w)}</p>" for w in info["warnings"]]
    parts.append(f"<p>Every hull here uses the {html.escape(ENERGY_DEFINITION)}.</p>")
    curves = learning_curves(info["iterations"], out / "learning_curves.png", errors)
    (out / "learning_curves.json").write_text(json.dumps(errors, indent=1))
    parts += [
        "<h2>Learning curves</h2>",
        _img(curves),
        "<p class='caption'>Model n (trained on the labels of iterations &lt; n) against "
        "the oracle labels of iteration n: the near-hull minima it selected (converged "
        "ACNN relaxations) apart from the unconverged and unphysical structures; solid: "
        "RMSE, dashed: median over the structures of each one's error (|ΔE|/atom, RMS of its "
        "force or stress components), robust to a few wild labels. Bottom "
        "right: ACNN relaxations of each iteration by outcome.</p>",
        _learning_table(errors),
    ]
    if lh is not None:
        parts += _hull_section(cfg, lh, out, window, join)
        rows = phase_table(lh, window)
        parts += [
            f"<h2>Stable and near-hull phases (E<sub>hull</sub> ≤ {window * 1000:.0f} "
            "meV/atom)</h2>",
            _table([r.as_dict() for r in rows], PHASE_COLUMNS),
        ]
        (out / "phases.json").write_text(json.dumps([r.as_dict() for r in rows], indent=1))
    else:
        parts.append("<h2>Convex hull</h2><p>No hull yet: no label covers every element.</p>")
    parts += [
        "<h2>Compute time</h2>",
        _table(
            [
                {"stage": s, "hours": sec / 3600, "counted": "yes" if c else "no (overlaps jobs)"}
                for s, sec, c in ctime["rows"]
            ],
            [
                ("stage", "Stage", "{}"),
                ("hours", "Wall time (h)", "{:.4f}"),
                ("counted", "In core-hours", "{}"),
            ],
        ),
        f"<p class='caption'>Core-hours {ctime['core_hours']:.4g}: "
        f"{html.escape(CORE_HOURS_NOTE)}</p>",
    ]
    parts += [
        "<h2>Oracle calls per stage</h2>",
        _table(
            [{"stage": k, "calls": v} for k, v in info["oracle_calls"].items()],
            [("stage", "Stage", "{}"), ("calls", "Oracle calls", "{}")],
        ),
        "<h2>Oracle jobs per iteration</h2>",
        _table(
            [
                {
                    **r,
                    "iteration": "initial"
                    if r["iteration"] == 0
                    else "oracle relaxations"
                    if r["iteration"] < 0
                    else r["iteration"],
                }
                for r in cost
            ],
            [
                ("iteration", "Iteration", "{}"),
                ("jobs", "Jobs", "{}"),
                ("ok", "Succeeded", "{}"),
                ("failed", "Failed", "{}"),
                ("wall_time_s", "Oracle wall time (s)", "{:.1f}"),
            ],
        ),
    ]
    if info.get("failures"):
        parts += [
            "<h2>Oracle failures</h2>",
            "<p class='caption'>Failed oracle jobs grouped by kind, with the first of each "
            "as an example (each job's record: DIR/oracle/&lt;code&gt;/s&lt;id&gt;/"
            "outcome.json).</p>",
            _table(
                info["failures"],
                [
                    ("kind", "Kind", "{}"),
                    ("count", "Jobs", "{}"),
                    ("example_structure", "Example structure", "{}"),
                    ("example_reason", "Its reason", "{}"),
                ],
            ),
        ]
    if info["oracle_relaxations"]:
        parts += [
            "<h2>Oracle relaxations</h2>",
            _table(
                info["oracle_relaxations"],
                [
                    ("stage", "Stage", "{}"),
                    ("parent_id", "Start structure", "{}"),
                    ("structure_id", "Final structure", "{}"),
                    ("status", "Status", "{}"),
                    ("steps", "Steps", "{}"),
                    ("calls", "Oracle calls", "{}"),
                    ("reason", "Reason", "{}"),
                ],
            ),
        ]
    parts += [
        "<h2>Iterations</h2>",
        _table(
            [
                {
                    "iteration": it["iteration"],
                    "finished": "yes" if it["finished"] else it["stage"],
                    "relaxed": c.relaxations,
                    "converged": c.converged,
                    "max_steps": c.max_steps,
                    "unphysical": c.unphysical,
                    "labelled": c.labelled,
                    "label_failures": c.label_failures,
                    **{
                        k: float((it.get("timings") or {}).get(k, math.nan))
                        for k in ("train", "search", "select_label")
                    },
                    "stable": ", ".join(it["stable"]),
                }
                for it in info["iterations"]
                for c in [IterationCounts.from_json(it["counts"])]
            ],
            [
                ("iteration", "Iteration", "{}"),
                ("finished", "Finished", "{}"),
                ("relaxed", "Structures optimised", "{}"),
                ("converged", "Converged", "{}"),
                ("max_steps", "Max steps", "{}"),
                ("unphysical", "Unphysical", "{}"),
                ("labelled", "Labelled", "{}"),
                ("label_failures", "Label failures", "{}"),
                ("train", "Train (s)", "{:.1f}"),
                ("search", "Search (s)", "{:.1f}"),
                ("select_label", "Select + label (s)", "{:.1f}"),
                ("stable", "Stable phases", "{}"),
            ],
        ),
    ]
    parts += [_extra(directory, fn) for fn in extra_sections or ()]
    from alcsp.analysis.report_sections import electronic_sections

    parts.append(_extra(directory, lambda d: electronic_sections(d, out)))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:left}table.header th{background:#f4f4f4}"
        "img{max-width:100%}.warning{color:#a00;font-weight:bold}"
        ".caption{color:#444;font-size:90%}pre{background:#f8f8f8;padding:0.5em;"
        "overflow-x:auto}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>alcsp report: "
        f"{html.escape(cfg.campaign.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path
