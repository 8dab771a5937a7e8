"""``alcsp export DIR --ehull 0.1``: CIF and extxyz of the labelled structures near the hull."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write CIF and extxyz files of the structures within an E_hull window",
        description="Exports the best labelled structure of every composition whose E_hull "
        "(on the hull of the oracle labels) is within --ehull eV/atom.",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--ehull", type=float, default=0.1, help="window in eV/atom (default 0.1)")
    p.add_argument("--out", type=Path, help="output folder (default DIR/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.campaign import labelled_hull
    from alcsp.config import parse_config
    from alcsp.report import phase_table
    from alcsp.store import DB_NAME, CampaignStore

    if args.ehull < 0:
        raise ValueError(f"--ehull must be >= 0 eV/atom, got {args.ehull}")
    if not (args.directory / DB_NAME).exists():
        raise FileNotFoundError(f"{args.directory} holds no campaign ({DB_NAME} missing)")
    out = args.out or args.directory / "export"
    with CampaignStore.open(args.directory, readonly=True) as store:
        cfg = parse_config(store.config_text)
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
        if lh is None:
            raise ValueError("the campaign has no hull yet (no label covers every element)")
        rows = phase_table(lh, args.ehull)
        ids = [r.structure_id for r in rows]
        cifs = store.export_cif(out / "cif", ids)
        n = store.export_extxyz(out / "structures.extxyz", ids, oracle=cfg.oracle.name)
    for r in rows:
        print(
            f"{r.composition:<14} {r.space_group:<16} E_hull {r.e_hull_mev:7.1f} meV/atom  "
            f"structure {r.structure_id}"
        )
    print(
        f"wrote {len(cifs)} CIF files to {out / 'cif'} and {n} frames to "
        f"{out / 'structures.extxyz'}"
    )
    return 0
