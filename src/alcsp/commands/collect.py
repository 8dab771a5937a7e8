"""``alcsp collect DIR --out labels.extxyz``: a campaign's training set as extended XYZ.

Every successful label of the campaign's oracle (or ``--oracle NAME``), reference phases
excluded, ordered by structure id: ``energy`` the zero-smearing E0, ``free_energy`` the
force-consistent F (what ``alcsp train`` fits), forces, stress where the code gave it, and
``structure_id``, ``iteration``, ``origin``, ``oracle`` in each frame's info. Labels with a
force component above ``--max-force`` (default: the campaign's ``[campaign]
train_max_force``, what the campaign itself trains on) are left out and counted. Opens the
campaign read-only: safe while it runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="write a campaign's training set (its oracle labels) as extxyz",
        description=(
            "Write the campaign's successful oracle labels as extended XYZ (energy = E0, "
            "free_energy = F, forces, stress; info: structure_id, iteration, origin, "
            "oracle), readable by `alcsp train`. Read-only: safe while the campaign runs."
        ),
    )
    p.add_argument("directory", type=Path, help="campaign directory")
    p.add_argument("--out", type=Path, required=True, help="extxyz file to write")
    p.add_argument(
        "--max-force",
        type=float,
        metavar="F",
        help="leave out labels with a force component above F eV/Å (default: the "
        "campaign's [campaign] train_max_force; 0 = keep every label)",
    )
    p.add_argument(
        "--oracle",
        metavar="NAME",
        help="labels of this oracle (default: the campaign's [oracle] name)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.io import write

    from alcsp.config import ConfigError, parse_config
    from alcsp.store import CampaignStore

    if args.max_force is not None and not (math.isfinite(args.max_force) and args.max_force >= 0):
        raise ValueError(f"--max-force must be >= 0 eV/Å (0 = no cap), got {args.max_force}")
    with CampaignStore.open_checked(args.directory) as store:
        oracle, cap = args.oracle, args.max_force
        if oracle is None or cap is None:
            try:
                config = parse_config(store.config_text, source=f"{args.directory} config")
            except ConfigError as exc:
                raise ValueError(
                    f"the stored config cannot be read by this alcsp ({exc}); "
                    "pass --oracle and --max-force explicitly"
                ) from None
            oracle = oracle or config.oracle.name
            cap = config.campaign.train_max_force if cap is None else cap
        frames = sorted(store.training_set(oracle), key=lambda a: a.info["structure_id"])
        oracles = store.oracles()
    if not frames:
        known = f" (labels exist from: {', '.join(oracles)})" if oracles else ""
        raise ValueError(
            f"{args.directory} has no successful label from oracle {oracle!r} "
            f"yet{known}; run the campaign further or choose --oracle"
        )
    kept = frames if cap == 0 else [a for a in frames if float(np.abs(a.get_forces()).max()) <= cap]
    left_out = len(frames) - len(kept)
    if not kept:
        raise ValueError(
            f"every one of the {len(frames)} labels has a force component above "
            f"{cap:g} eV/Å; raise --max-force (0 = no cap)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    write(tmp, kept, format="extxyz")
    tmp.replace(args.out)
    print(f"wrote {len(kept)} labelled structures ({oracle}) to {args.out}")
    if left_out:
        print(
            f"left out {left_out} with a force component above {cap:g} eV/Å "
            "(--max-force 0 keeps them)"
        )
    return 0
