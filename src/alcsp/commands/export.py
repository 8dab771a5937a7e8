"""``alcsp export DIR --ehull 0.1``: CIF and extxyz of the labelled structures near the hull."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from alcsp.errors import UserError


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


def check_window(ehull: float, option: str = "--ehull") -> None:
    """A window above the hull (eV/atom) is a finite number >= 0."""
    if not (math.isfinite(ehull) and ehull >= 0):
        raise UserError(f"{option} must be >= 0 eV/atom and finite (e.g. 0.1), got {ehull}")


def output_folder(given: Path | None, default: Path, what: str) -> Path:
    """The folder to write ``what`` into (``--out`` or ``default``), made now: a one-line
    error naming ``--out`` when it is a file or cannot be made."""
    out = given or default
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder to write {what} into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot make the folder {out} for {what} ({exc.strerror}); pass --out FOLDER "
            "to write it elsewhere"
        ) from None
    return out


def run(args: argparse.Namespace) -> int:
    from alcsp.campaign import labelled_hull
    from alcsp.config import ConfigError, parse_config
    from alcsp.report import phase_table
    from alcsp.store import CampaignStore

    check_window(args.ehull)
    with CampaignStore.open_checked(args.directory) as store:
        try:
            cfg = parse_config(store.config_text, source=f"the stored config of {args.directory}")
        except ConfigError as exc:
            raise UserError(f"{exc}; this alcsp cannot export the campaign") from None
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
        if lh is None:
            raise UserError(
                "the campaign has no hull yet (no label covers every element); run it "
                f"further with `alcsp run {args.directory}`"
            )
        rows = phase_table(lh, args.ehull)
        ids = [r.structure_id for r in rows]
        out = output_folder(args.out, args.directory / "export", "the exported structures")
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
