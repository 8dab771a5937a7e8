"""``alcsp converge CONFIG``: volumes at the pressure and a cutoff / k-point / band scan with
the config's oracle, before a campaign (alcsp.converge)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path


def _factors(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _campaign_around(directory: Path) -> Path | None:
    """The campaign directory holding ``directory`` (itself or a parent), if any."""
    from alcsp.store import DB_NAME

    for d in (directory, *directory.absolute().parents):
        if (d / DB_NAME).exists():
            return d
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "converge",
        help="find volumes at the pressure and check cutoff, k-points and bands",
        description=(
            "Before a campaign: with the config's own oracle, find the volume at the campaign "
            "pressure of each element's 1-atom fcc cell and of one 2-atom B2 compound, then "
            "compare the energy (E0, zero smearing) and pressure there at the config's "
            "plane-wave cutoff, k-point spacing and band count against tighter values, with a "
            "verdict per setting (GPAW; EMT and CHGNet: volumes only). Writes nothing into any "
            "campaign directory."
        ),
    )
    p.add_argument("config", type=Path, help="campaign TOML file")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the full result as JSON")
    p.add_argument(
        "--workdir",
        type=Path,
        help="directory for the oracle jobs (default: a temporary one, deleted afterwards "
        "unless --keep); finished jobs in it are reused",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--jobs", type=int, default=1, help="oracle jobs at once (default 1)")
    p.add_argument("--timeout", type=float, metavar="S", help="override [oracle] timeout_s")
    p.add_argument("--energy-tol", type=float, default=5.0, help="meV/atom (default 5)")
    p.add_argument("--pressure-tol", type=float, default=2.0, help="GPa (default 2)")
    p.add_argument(
        "--ecut-factors",
        type=_factors,
        default=(1.0, 1.25, 1.5),
        help="cutoffs tried, as multiples of the config's (default 1,1.25,1.5)",
    )
    p.add_argument(
        "--kspacing-factors",
        type=_factors,
        default=(1.0, 0.67, 0.5),
        help="k-point spacings tried, as multiples of the config's (default 1,0.67,0.5)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="one line per calculation on stderr (default: only when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.config import load_config
    from alcsp.converge import (
        ConvergeError,
        ConvergeOptions,
        converge,
        format_result,
        result_to_json,
    )

    if args.jobs < 1:
        raise ConvergeError(f"--jobs must be >= 1 (oracle jobs at once), got {args.jobs}")
    for option, value in (
        ("--energy-tol", args.energy_tol),
        ("--pressure-tol", args.pressure_tol),
        ("--timeout", args.timeout),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConvergeError(f"{option} must be a finite number > 0, got {value}")
    config = load_config(args.config)
    options = ConvergeOptions(
        energy_tol_mev=args.energy_tol,
        pressure_tol_gpa=args.pressure_tol,
        jobs=args.jobs,
        timeout_s=args.timeout,
        ecut_factors=args.ecut_factors,
        kspacing_factors=args.kspacing_factors,
    )
    temporary = args.workdir is None
    if temporary:
        workdir = Path(tempfile.mkdtemp(prefix="alcsp-converge-"))
    else:
        workdir = args.workdir
        inside = _campaign_around(workdir)
        if inside is not None:
            raise ConvergeError(
                f"--workdir {workdir} is inside the campaign directory {inside}: alcsp converge "
                "never writes into one; choose another directory"
            )
    show = args.verbose or sys.stderr.isatty()

    def progress(msg: str) -> None:
        print(f"alcsp converge: {msg}", file=sys.stderr, flush=True)

    try:
        result = converge(
            config, workdir, options, source=str(args.config), progress=progress if show else None
        )
    except ConvergeError as exc:
        if temporary and not args.keep:
            if any(workdir.iterdir()):  # keep the failed jobs' logs: the message points there
                raise ConvergeError(f"{exc} (job files kept in {workdir})") from exc
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except BaseException:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    print(format_result(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result_to_json(result), indent=1, ensure_ascii=False))
        print(f"\nwrote {args.json}")
    if temporary and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif temporary:
        print(f"job files kept in {workdir}")
    return 0
