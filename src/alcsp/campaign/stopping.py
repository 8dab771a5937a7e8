"""When the search may stop: the stop rule over the hull of every oracle label."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from alcsp.campaign.context import StageContext
from alcsp.campaign.training import stored_committee
from alcsp.store.hulls import reference_names


def committee_spread(ctx: StageContext, n: int, structures: list[Atoms]) -> float | None:
    """Largest committee energy spread (eV/atom) of iteration n's committee over
    ``structures``; None without a committee."""
    committee = stored_committee(ctx, n)
    if committee is None or not structures:
        return None
    ev = committee.evaluate(structures, ctx.config.campaign.pressure)
    return float(np.max(ev.energy_std))


def stop_reason(ctx: StageContext, n: int) -> str | None:
    """Why the search may stop after iteration ``n``, or None to go on.

    Converged means: in each of the last K = ``hull_patience`` iterations no new oracle
    label landed within ``stop_window`` of the DFT hull (built from every label so far),
    and, with a committee, its energy spread on every label within that window is below
    ``hull_tolerance`` (the model agrees with itself where the hull is). An unchanged
    stable set is not enough: two runs stopped on an unchanged but wrong one. In a
    campaign with references, a hull of the elements alone never counts as converged
    (the compounds, labelled at rough ML geometries, all sit above it at first).
    """
    cfg = ctx.config.campaign
    k = cfg.hull_patience
    if n < k or n < 1:
        return None
    recent = range(n - k + 1, n + 1)
    finished = {it.index for it in ctx.store.iterations() if it.finished is not None}
    if not set(recent) <= finished:
        return None
    lh = ctx.labelled_hull()
    if lh is None:
        return None
    stable = set(lh.hull.stable_keys)
    if stable <= set(ctx.config.elements) and reference_names(ctx.store):
        return None
    window = cfg.stop_window_ev
    near = [j for j in range(len(lh.kept)) if lh.hull.e_hull[j] <= window + 1e-12]
    landed = sorted({int(lh.structures[lh.kept[j]].info["iteration"]) for j in near} & set(recent))
    if landed:
        return None
    why = (
        f"no new label within {window * 1000:.1f} meV/atom of the DFT hull in "
        f"iterations {recent[0]}-{recent[-1]}"
    )
    spread = committee_spread(ctx, n, [lh.structures[lh.kept[j]] for j in near])
    if spread is not None:
        if spread >= cfg.hull_tolerance:
            return None
        why += (
            f", committee spread on the {len(near)} near-hull labels at most "
            f"{spread * 1000:.1f} meV/atom"
        )
    return why
