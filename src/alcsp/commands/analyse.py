"""``alcsp analyse DIR [--ehull 0.1] [--what cages,electronic,tc] [--json OUT]
[--bond-cutoff Å]``."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alcsp.analysis import AnalysisError, AnalysisKind


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyse",
        help="hydrogen cages, electronic structure and T_c estimates of near-hull structures",
        description=(
            "Analyses every labelled structure within --ehull eV/atom of the hull of the "
            "oracle labels. cages: the closed hydrogen cage around every metal atom "
            "(prototype, e.g. H24 4^6 6^8, and point group). electronic: with the campaign's "
            "GPAW settings, a SCF, the band structure along the standard path, the band gap, "
            "the total and projected DOS and the DOS at the Fermi level with its hydrogen "
            "fraction. tc (hydrides): the T_c estimate of Belli et al. (2021) from the ELF "
            "networking value, about ±60 K, not an Eliashberg calculation. Results are "
            "stored in DIR/analysis/{cages,electronic,tc}.json as each structure finishes; a "
            "second call with the same settings reads them back. See docs/analysis.md."
        ),
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--ehull", type=float, default=0.1, help="window in eV/atom (default 0.1)")
    p.add_argument(
        "--what",
        default=AnalysisKind.CAGES.value,
        help=f"comma-separated analyses: {', '.join(k.value for k in AnalysisKind)} "
        "(default cages)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    p.add_argument(
        "--bond-cutoff",
        type=float,
        default=None,
        metavar="Å",
        help="cages: fixed H–H bond cutoff (default: 1.3 × the median nearest H–H distance "
        "of each structure, at most 1.6 Å)",
    )
    p.set_defaults(func=run)


def parse_what(text: str) -> list[AnalysisKind]:
    """``--what``: known kinds, each implemented, in the order given; a one-line error
    otherwise."""
    kinds: list[AnalysisKind] = []
    for word in (w.strip() for w in text.split(",")):
        try:
            kind = AnalysisKind(word)
        except ValueError:
            raise AnalysisError(
                f"--what {word!r} is not an analysis; choose from "
                f"{', '.join(k.value for k in AnalysisKind)}"
            ) from None
        if kind not in kinds:
            kinds.append(kind)
    missing = [k.value for k in kinds if not k.implemented]
    if missing:
        raise AnalysisError(f"--what {','.join(missing)}: not implemented yet")
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


@dataclass(frozen=True)
class Selection:
    """The campaign's hull and the hull entries to analyse, in order of E_hull."""

    cfg: Any
    lh: Any
    chosen: list[int]


def _select(args: argparse.Namespace, kinds: list[AnalysisKind]) -> Selection:
    """The config, the labelled hull and the entries within ``--ehull``: hydrides for cages
    and tc, every structure for electronic alone. One-line errors for the campaign."""
    from alcsp.campaign import labelled_hull
    from alcsp.config import parse_config
    from alcsp.store import CampaignStore

    if not (math.isfinite(args.ehull) and args.ehull >= 0):
        raise AnalysisError(f"--ehull must be >= 0 eV/atom and finite, got {args.ehull}")
    with CampaignStore.open_checked(args.directory) as store:
        cfg = parse_config(store.config_text, source=f"{args.directory} config")
        if "H" not in cfg.elements:
            if AnalysisKind.CAGES in kinds:
                raise AnalysisError(
                    f"the campaign's elements {'-'.join(cfg.elements)} include no hydrogen: "
                    "there are no hydrogen cages to find"
                )
            if AnalysisKind.TC in kinds:
                raise AnalysisError(
                    f"the campaign's elements {'-'.join(cfg.elements)} include no hydrogen: "
                    "the T_c estimate (Belli et al.) is for hydrides; drop tc from --what"
                )
        if AnalysisKind.ELECTRONIC in kinds or AnalysisKind.TC in kinds:
            if cfg.oracle.name != "gpaw":
                raise AnalysisError(
                    f"--what electronic/tc needs the GPAW oracle; this campaign's oracle is "
                    f"{cfg.oracle.name!r}, which computes no electronic structure"
                )
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, cfg.elements)
    if lh is None:
        raise AnalysisError("the campaign has no hull yet (no label covers every element)")
    e_hull = lh.hull.e_hull
    hydrides_only = AnalysisKind.CAGES in kinds or AnalysisKind.TC in kinds
    candidates = [
        i for i in range(len(e_hull)) if not hydrides_only or _is_hydride(lh.structures[lh.kept[i]])
    ]
    chosen = sorted(
        (i for i in candidates if e_hull[i] <= args.ehull + 1e-12),
        key=lambda i: (e_hull[i], lh.structure_id(i)),
    )
    if not chosen:
        noun = "hydride" if hydrides_only else "structure"
        lowest = (
            f"the lowest is {min(e_hull[i] for i in candidates) * 1000:.1f} meV/atom"
            if candidates
            else f"no {noun} is labelled yet"
        )
        raise AnalysisError(
            f"no {noun} within E_hull <= {args.ehull:g} eV/atom ({lowest}); widen --ehull"
        )
    return Selection(cfg, lh, chosen)


def run(args: argparse.Namespace) -> int:
    kinds = parse_what(args.what)
    if AnalysisKind.CAGES in kinds:
        from alcsp.analysis.cages import CageSettings

        try:
            CageSettings(bond_cutoff=args.bond_cutoff)  # checks the cutoff before any I/O
        except ValueError as exc:
            raise AnalysisError(str(exc)) from None
    sel = _select(args, kinds)
    out: dict[str, Any] = {"ehull": args.ehull}
    if AnalysisKind.CAGES in kinds:
        out["cages"] = _run_cages(args, sel)
    if AnalysisKind.ELECTRONIC in kinds or AnalysisKind.TC in kinds:
        out.update(_run_electronic(args, sel, kinds))
    if args.json is not None:
        from alcsp.analysis.results import write_json_atomically

        # one kind alone keeps the layout of a cages-only table
        data = out["cages"] if kinds == [AnalysisKind.CAGES] else out
        write_json_atomically(args.json, data)
        print(f"wrote {args.json}")
    return 0


# -------------------------------------------------------------------------------- cages


def _run_cages(args: argparse.Namespace, sel: Selection) -> dict[str, Any]:
    from alcsp.analysis import cages as cages_mod
    from alcsp.analysis.cages import CageSettings, group_by_prototype
    from alcsp.analysis.results import CageResults, StoredCages
    from alcsp.report import space_group

    settings = CageSettings(bond_cutoff=args.bond_cutoff)
    lh, e_hull = sel.lh, sel.lh.hull.e_hull
    rows: list[Row] = []
    analyses = {}
    with CageResults.open(args.directory) as results:
        print(
            f"{'composition':<14} {'structure':>9} {'E_hull':>7} {'space group':<16} "
            f"{'caged':>5} {'cutoff':>6}  cages"
        )
        print(f"{'':<14} {'':>9} {'meV/at':>7} {'':<16} {'':>5} {'Å':>6}")
        for i in sel.chosen:
            sid = lh.structure_id(i)
            stored = results.get(sid, settings)
            if stored is None:
                atoms = lh.structures[lh.kept[i]]
                stored = StoredCages(
                    sid,
                    lh.hull.keys[lh.hull.comp_index[i]],
                    space_group(atoms),
                    cages_mod.analyse_cages(atoms, settings),
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
    return {
        "settings": settings.to_json(),
        "ehull": args.ehull,
        "rows": [r.as_dict() for r in rows],
        "groups": {p.label: ids for p, ids in groups.items()},
    }


# ------------------------------------------------------------------ electronic and tc


@dataclass(frozen=True)
class ElectronicRow:
    """One structure of the electronic/T_c table (energies eV, N(E_F) states/eV/atom,
    T_c K; None where not asked or not applicable)."""

    structure_id: int
    composition: str
    e_hull_mev: float
    space_group: str
    gap: float
    gap_kind: str
    dos_at_fermi_per_atom: float
    h_dos: float | None
    phi: float | None
    h_fraction: float | None
    tc_estimate_k: float | None
    sigma_k: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _run_electronic(
    args: argparse.Namespace, sel: Selection, kinds: list[AnalysisKind]
) -> dict[str, Any]:
    """Electronic structure (and the T_c estimate of the hydrides) of the selection; each
    result stored as it finishes, stored ones reused; a structure GPAW cannot compute is
    named on one line and skipped; an AnalysisError when none could be computed."""
    from alcsp.analysis import electronic as el
    from alcsp.analysis import tc as tc_mod
    from alcsp.analysis.results import KeyedResults, electronic_path, tc_path
    from alcsp.oracle.gpaw import GPAWSpec
    from alcsp.report import space_group

    want_tc = AnalysisKind.TC in kinds
    try:
        params = GPAWSpec.Params(**dict(sel.cfg.oracle.parameters))
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"[oracle.parameters] are not GPAW's: {exc}") from None
    esettings = el.ElectronicSettings()
    tsettings = tc_mod.TcSettings()
    ekey = el.electronic_key(params, esettings)
    tkey = f"{ekey};{tsettings.key()}"
    lh, e_hull = sel.lh, sel.lh.hull.e_hull
    rows: list[ElectronicRow] = []
    failures: list[str] = []
    work = Path(args.directory) / "analysis" / "gpaw"
    header = (
        f"{'composition':<14} {'structure':>9} {'E_hull':>7} {'space group':<16} "
        f"{'gap':>6} {'kind':<8} {'N(E_F)':>7} {'H_DOS':>6}"
    )
    units = f"{'':<14} {'':>9} {'meV/at':>7} {'':<16} {'eV':>6} {'':<8} {'/eV/at':>7} {'':>6}"
    if want_tc:
        header += f" {'phi':>6} {'H_f':>5} {'T_c est.':>9}"
        units += f" {'':>6} {'':>5} {'K ±60':>9}"
    with (
        KeyedResults.open(electronic_path(args.directory), "electronic") as eres,
        KeyedResults.open(tc_path(args.directory), "tc") as tres,
    ):
        print(header)
        print(units)
        for i in sel.chosen:
            sid = lh.structure_id(i)
            atoms = lh.structures[lh.kept[i]]
            composition = lh.hull.keys[lh.hull.comp_index[i]]
            hydride = _is_hydride(atoms)
            stored_e = eres.get(ekey, sid)
            stored_t = tres.get(tkey, sid) if want_tc and hydride else None
            need_tc = want_tc and hydride and stored_t is None
            if stored_e is None or need_tc:
                try:
                    prepared, calc = el.run_scf(atoms, params, work / str(sid))
                    es = el.analyse_electronic(prepared, calc, esettings, work / str(sid))
                    est = (
                        tc_mod.estimate_tc(prepared, calc, es.h_dos, tsettings) if need_tc else None
                    )
                except Exception as exc:  # noqa: BLE001 - any GPAW failure skips the structure
                    line = (
                        f"structure {sid} ({composition}): GPAW could not compute it "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); skipped"
                    )
                    print(line)
                    failures.append(line)
                    continue
                sg = space_group(atoms)
                stored_e = {"composition": composition, "space_group": sg, "result": es.to_json()}
                eres.add(
                    ekey, {"gpaw": dataclasses.asdict(params), **esettings.to_json()}, sid, stored_e
                )
                if est is not None:
                    stored_t = {
                        "composition": composition,
                        "space_group": sg,
                        "result": est.to_json(),
                    }
                    tres.add(tkey, tsettings.to_json(), sid, stored_t)
            es = el.ElectronicStructure.from_json(stored_e["result"])
            est = None if stored_t is None else tc_mod.TcEstimate.from_json(stored_t["result"])
            row = ElectronicRow(
                structure_id=sid,
                composition=composition,
                e_hull_mev=float(e_hull[i] * 1000),
                space_group=str(stored_e["space_group"]),
                gap=es.gap,
                gap_kind=es.gap_kind,
                dos_at_fermi_per_atom=es.dos_at_fermi_per_atom,
                h_dos=es.h_dos,
                phi=None if est is None else est.phi,
                h_fraction=None if est is None else est.h_fraction,
                tc_estimate_k=None if est is None else est.tc,
                sigma_k=None if est is None else est.sigma,
            )
            rows.append(row)
            line = (
                f"{row.composition:<14} {sid:>9} {row.e_hull_mev:7.1f} {row.space_group:<16} "
                f"{row.gap:6.2f} {row.gap_kind:<8} {row.dos_at_fermi_per_atom:7.3f} "
                f"{_fmt(row.h_dos, '6.3f'):>6}"
            )
            if want_tc:
                line += (
                    f" {_fmt(row.phi, '6.3f'):>6} {_fmt(row.h_fraction, '5.2f'):>5} "
                    f"{_fmt(row.tc_estimate_k, '9.0f'):>9}"
                )
            print(line)
        if not rows:
            raise AnalysisError(
                f"none of the {len(sel.chosen)} selected structures could be computed with "
                f"GPAW (first: {failures[0]})"
            )
        done = [(r.structure_id, r.e_hull_mev) for r in rows]
        eres.finish_run(ekey, args.ehull, done)
        if want_tc:
            tres.finish_run(
                tkey, args.ehull, [d for d, r in zip(done, rows, strict=True) if r.phi is not None]
            )
    if want_tc:
        print(f"T_c: {tc_mod.DISCLAIMER}")
    if failures:
        print(f"{len(failures)} of {len(sel.chosen)} structures could not be computed (above)")
    print(f"stored in {eres.path}" + (f" and {tres.path}" if want_tc else ""))
    result: dict[str, Any] = {
        "electronic": {
            "settings_key": ekey,
            "gpaw": dataclasses.asdict(params),
            "settings": esettings.to_json(),
            "rows": [r.as_dict() for r in rows],
            "failures": failures,
        }
    }
    if want_tc:
        result["tc"] = {
            "settings_key": tkey,
            "settings": tsettings.to_json(),
            "formula": tc_mod.REFERENCE,
            "note": tc_mod.DISCLAIMER,
        }
    return result
