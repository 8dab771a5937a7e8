"""``alcsp report DIR``: one self-contained HTML report (plus PNGs) of a campaign."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a campaign")
    p.add_argument("directory", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default DIR/report)")
    p.add_argument("--ehull", type=float, help="near-hull window, eV/atom (default: config)")
    p.add_argument(
        "--join",
        help="for 4+ elements: the pseudo-binary/ternary join to plot, "
        "e.g. BeO,P2O5,P3N5 (default: chosen from the stable phases)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.analysis.report_sections import cage_section
    from alcsp.commands.export import check_window, output_folder
    from alcsp.report import write_report
    from alcsp.store import CampaignStore

    if args.ehull is not None:
        check_window(args.ehull)
    CampaignStore.open_checked(args.directory).close()  # before any file is written
    out = output_folder(args.out, args.directory / "report", "the report")
    join = [x.strip() for x in args.join.split(",")] if args.join else None
    path = write_report(args.directory, out, args.ehull, join=join, extra_sections=[cage_section])
    print(f"wrote {path}")
    return 0
