"""``alcsp export DIR --ehull 0.1``: CIF and extxyz of the labelled structures near the hull.

Each composition's distinct structures within the window (its lowest, or up to
``--polymorphs N``; duplicates by the campaign's ``[dedup]`` tolerances count once), with
their oracle labels. Every extxyz frame's info holds ``structure_id``, ``composition``,
``space_group``, ``e_hull`` and ``formation_enthalpy`` (eV/atom, on the hull of the oracle
labels at the campaign's pressure, H = E0 + PV), ``pressure`` (GPa), ``source`` (in words),
``origin`` and ``iteration``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from alcsp.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write CIF and extxyz files of the structures within an E_hull window",
        description="Exports the lowest labelled structure of every composition whose E_hull "
        "(on the hull of the oracle labels) is within --ehull eV/atom, or its lowest "
        "distinct polymorphs within the window with --polymorphs. Each extxyz frame's info "
        "holds structure_id, composition, space_group, e_hull and formation_enthalpy "
        "(eV/atom), pressure (GPa), source, origin and iteration.",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--ehull", type=float, default=0.1, help="window in eV/atom (default 0.1)")
    p.add_argument("--out", type=Path, help="output folder (default DIR/export)")
    p.add_argument(
        "--polymorphs",
        type=int,
        default=1,
        metavar="N",
        help="distinct structures per composition within the window, lowest first "
        "(default 1; 0 = all)",
    )
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
    from ase.io import write

    from alcsp.campaign import labelled_hull
    from alcsp.config import ConfigError, parse_config
    from alcsp.report import polymorph_rows
    from alcsp.store import CampaignStore

    check_window(args.ehull)
    if args.polymorphs < 0:
        raise UserError(f"--polymorphs must be >= 0 (0 = all), got {args.polymorphs}")
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
        rows = polymorph_rows(lh, args.ehull, args.polymorphs, cfg.dedup)
        out = output_folder(args.out, args.directory / "export", "the exported structures")
        cifs = store.export_cif(out / "cif", [r.structure_id for r in rows])
    labels = {int(a.info["structure_id"]): a for a in lh.structures}
    frames = []
    for r in rows:
        atoms = labels[r.structure_id].copy()
        atoms.calc = labels[r.structure_id].calc  # its oracle label (energy E0, F, forces)
        atoms.info.update(
            composition=r.composition,
            space_group=r.space_group,
            e_hull=r.e_hull_mev / 1000,
            formation_enthalpy=r.formation_mev / 1000,
            pressure=cfg.campaign.pressure,
            source=r.source,
        )
        frames.append(atoms)
    tmp = out / "structures.extxyz.tmp"
    write(tmp, frames, format="extxyz")
    tmp.replace(out / "structures.extxyz")
    for r in rows:
        print(
            f"{r.composition:<14} {r.space_group:<16} E_hull {r.e_hull_mev:7.1f} meV/atom  "
            f"structure {r.structure_id}"
        )
    print(
        f"wrote {len(cifs)} CIF files to {out / 'cif'} and {len(frames)} frames to "
        f"{out / 'structures.extxyz'}"
    )
    return 0
