"""``alcsp analyse DIR [--ehull 0.1] [--what cages] [--json OUT] [--bond-cutoff Å]``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from alcsp.analysis import AnalysisKind


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyse",
        help="hydrogen clathrate cages of the structures within an E_hull window",
        description=(
            "Finds the closed hydrogen cage around every metal atom of each labelled "
            "structure within --ehull eV/atom of the hull of the oracle labels, and prints "
            "their prototypes (e.g. H24 4^6 6^8) and point groups. Results are stored in "
            "DIR/analysis/cages.json as each structure finishes; a second call with the "
            "same settings reads them back. See docs/analysis.md."
        ),
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--ehull", type=float, default=0.1, help="window in eV/atom (default 0.1)")
    p.add_argument(
        "--what",
        default=AnalysisKind.CAGES.value,
        help=f"comma-separated analyses: {', '.join(k.value for k in AnalysisKind)} "
        "(only cages is implemented)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    p.add_argument(
        "--bond-cutoff",
        type=float,
        default=None,
        metavar="Å",
        help="fixed H–H bond cutoff (default: 1.3 × the median nearest H–H distance of "
        "each structure, at most 1.6 Å)",
    )
    p.set_defaults(func=run)


def parse_what(text: str) -> list[AnalysisKind]:
    """``--what``: known kinds, each implemented; a one-line error otherwise."""
    kinds = []
    for word in (w.strip() for w in text.split(",")):
        try:
            kinds.append(AnalysisKind(word))
        except ValueError:
            raise ValueError(
                f"--what {word!r} is not an analysis; choose from "
                f"{', '.join(k.value for k in AnalysisKind)}"
            ) from None
    missing = [k.value for k in kinds if not k.implemented]
    if missing:
        raise ValueError(
            f"--what {','.join(missing)}: not implemented yet; only --what cages is available"
        )
    return kinds


@dataclass(frozen=True)
class Row:
    structure_id: int
    composition: str
    e_hull_mev: float
    space_group: str
    cages: tuple[str, ...]
    prototypes: tuple[str, ...]
    caged_fraction: float
    is_clathrate: bool
    bond_cutoff: float

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["cages"], d["prototypes"] = list(self.cages), list(self.prototypes)
        return d


def _is_hydride(atoms) -> bool:
    """Hydrogen and at least one other element: a structure that can hold cages."""
    h = atoms.numbers == 1
    return bool(h.any() and not h.all())


def run(args: argparse.Namespace) -> int:
    parse_what(args.what)
    if args.ehull < 0:
        raise ValueError(f"--ehull must be >= 0 eV/atom, got {args.ehull}")
    from alcsp.analysis.cages import CageSettings, analyse_cages, group_by_prototype
    from alcsp.analysis.results import CageResults, StoredCages, write_json_atomically
    from alcsp.campaign import labelled_hull
    from alcsp.config import parse_config
    from alcsp.report import space_group
    from alcsp.store import DB_NAME, CampaignStore

    settings = CageSettings(bond_cutoff=args.bond_cutoff)  # checks the cutoff
    if not (args.directory / DB_NAME).exists():
        raise FileNotFoundError(f"{args.directory} holds no campaign ({DB_NAME} missing)")
    with CampaignStore.open(args.directory, readonly=True) as store:
        cfg = parse_config(store.config_text, source=f"{args.directory} config")
        if "H" not in cfg.elements:
            raise ValueError(
                f"the campaign's elements {'-'.join(cfg.elements)} include no hydrogen: "
                "there are no hydrogen cages to find"
            )
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
    if lh is None:
        raise ValueError("the campaign has no hull yet (no label covers every element)")
    e_hull = lh.hull.e_hull
    hydrides = [i for i in range(len(e_hull)) if _is_hydride(lh.structures[lh.kept[i]])]
    chosen = sorted(
        (i for i in hydrides if e_hull[i] <= args.ehull + 1e-12),
        key=lambda i: (e_hull[i], lh.structure_id(i)),
    )
    if not chosen:
        lowest = (
            f"the lowest is {min(e_hull[i] for i in hydrides) * 1000:.1f} meV/atom"
            if hydrides
            else "no hydride is labelled yet"
        )
        raise ValueError(
            f"no hydride within E_hull <= {args.ehull:g} eV/atom ({lowest}); widen --ehull"
        )
    rows: list[Row] = []
    analyses = {}
    with CageResults.open(args.directory) as results:
        print(
            f"{'composition':<14} {'structure':>9} {'E_hull':>7} {'space group':<16} "
            f"{'caged':>5} {'cutoff':>6}  cages"
        )
        print(f"{'':<14} {'':>9} {'meV/at':>7} {'':<16} {'':>5} {'Å':>6}")
        for i in chosen:
            sid = lh.structure_id(i)
            stored = results.get(sid, settings)
            if stored is None:
                atoms = lh.structures[lh.kept[i]]
                stored = StoredCages(
                    sid,
                    lh.hull.keys[lh.hull.comp_index[i]],
                    space_group(atoms),
                    analyse_cages(atoms, settings),
                )
                results.add(settings, stored)
            a = stored.analysis
            analyses[sid] = a
            row = Row(
                sid,
                stored.composition,
                float(e_hull[i] * 1000),
                stored.space_group,
                a.descriptions,
                tuple(p.label for p in a.prototypes),
                a.caged_fraction,
                a.is_clathrate,
                a.bond_cutoff,
            )
            rows.append(row)
            print(
                f"{row.composition:<14} {sid:>9} {row.e_hull_mev:7.1f} {row.space_group:<16} "
                f"{row.caged_fraction:5.2f} {row.bond_cutoff:6.2f}  "
                f"{'; '.join(row.cages) or '-'}"
            )
        results.finish_run(settings, args.ehull, [(r.structure_id, r.e_hull_mev) for r in rows])
    groups = group_by_prototype(analyses)
    n_clathrate = sum(r.is_clathrate for r in rows)
    print(
        f"{n_clathrate} of {len(rows)} structures are clathrates (at least "
        f"{settings.clathrate_fraction:.0%} of the metal atoms caged)"
    )
    for proto, ids in groups.items():
        noun = "structure" if len(ids) == 1 else "structures"
        print(f"  {proto.label:<20} {len(ids)} {noun}: {', '.join(map(str, ids))}")
    print(f"stored in {results.path}")
    if args.json is not None:
        write_json_atomically(
            args.json,
            {
                "settings": settings.to_json(),
                "ehull": args.ehull,
                "rows": [r.as_dict() for r in rows],
                "groups": {p.label: ids for p, ids in groups.items()},
            },
        )
        print(f"wrote {args.json}")
    return 0
