"""The "Hydrogen cages" section of a campaign report, from ``DIR/analysis/cages.json``."""

from __future__ import annotations

import html
import time
from pathlib import Path

from alcsp.analysis.cages import group_by_prototype
from alcsp.analysis.results import StoredCages, cages_path, load_stored


def cage_section(directory: Path) -> str:
    """HTML of the stored cage analysis (empty when ``alcsp analyse`` never stored one):
    the structures of the last finished run with their cages, then the structures grouped
    by cage prototype. Without a finished run, every result of the settings stored last."""
    if not cages_path(directory).exists():
        return ""
    results, last = load_stored(Path(directory))
    if not results:
        return ""
    if last is not None and last.settings_key in results:
        key = last.settings_key
        stored = results[key]
        rows = [(stored[sid], e) for sid, e in last.rows if sid in stored]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.finished))
        intro = (
            f"Structures within E_hull ≤ {last.ehull * 1000:.0f} meV/atom when "
            f"<code>alcsp analyse</code> last ran ({when}; E_hull as it was then)."
        )
    else:
        key = list(results)[-1]
        rows = [(s, None) for _, s in sorted(results[key].items())]
        intro = "Every stored structure (no <code>alcsp analyse</code> run has finished)."
    shown = {s.structure_id: s for s, _ in rows}
    return "".join(
        [
            "<h2>Hydrogen cages</h2>",
            f"<p>{intro} Settings: <code>{html.escape(key)}</code>.</p>",
            _rows_table(rows),
            "<h3>Structures by cage prototype</h3>",
            _groups_table(shown),
        ]
    )


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _rows_table(rows: list[tuple[StoredCages, float | None]]) -> str:
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
    body = []
    for s, e in rows:
        a = s.analysis
        cells = (
            s.composition,
            s.structure_id,
            "-" if e is None else f"{e:.1f}",
            s.space_group,
            "; ".join(a.descriptions) or "-",
            f"{a.caged_fraction:.2f}",
            "yes" if a.is_clathrate else "no",
            f"{a.bond_cutoff:.2f}",
        )
        body.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    if not body:
        return "<p>(none)</p>"
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


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
