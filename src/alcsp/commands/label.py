"""``alcsp label IN.extxyz --config CONFIG --out OUT.extxyz``: label structures with the
oracle of a campaign config, outside any campaign.

The oracle and the executor are the campaign's own (``make_oracle`` of ``[oracle]``,
``make_executor`` of ``[executor]``), and the jobs go through ``alcsp.label``'s
``label_structures``, so isolation, time limit, retries and lost-worker handling are the
campaign's. Job folders go to ``--workdir`` (default ``OUT.jobs`` next to OUT); a finished
job there is reused, so an interrupted run continues where it stopped. A failed structure
is reported with its reason and left out of OUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ase import Atoms

    from alcsp.oracle.base import LabelResult
    from alcsp.store import CampaignStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="label structures (extxyz) with a config's oracle",
        description=(
            "Label every structure of IN.extxyz with the [oracle] of CONFIG (isolation, time "
            "limit and retries as in a campaign; jobs on its [executor]) and write the "
            "successful ones, with energy, free_energy, forces and stress, to OUT.extxyz. "
            "Failures are listed with their reason; exit code 0 if any structure was "
            "labelled, 2 if none was."
        ),
    )
    p.add_argument("structures", type=Path, help="structures to label, extended XYZ")
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        help="campaign config (TOML) whose [oracle] and [executor] are used",
    )
    p.add_argument("--out", type=Path, required=True, help="extxyz file of the labels")
    p.add_argument(
        "--workdir",
        type=Path,
        help="folder for the oracle job folders (default: OUT.jobs beside OUT); "
        "finished jobs in it are reused",
    )
    p.set_defaults(func=run)


class _Frames:
    """The three methods of ``CampaignStore`` that ``label_structures`` uses, over frames
    in memory: structure id k is frame k (job folder ``s00000000k``)."""

    def __init__(self, frames: list[Atoms]) -> None:
        self.frames = frames
        self.results: dict[int, LabelResult] = {}

    def labelled_ids(self, oracle: str) -> set[int]:
        return set(self.results)

    def get_atoms(self, ids: Iterable[int]) -> list[Atoms]:
        return [self.frames[i].copy() for i in ids]

    def add_labels(self, results: Iterable[tuple[int, LabelResult]], iteration: int) -> None:
        self.results.update(results)


def run(args: argparse.Namespace) -> int:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    from alcsp.config import load_config
    from alcsp.execute import make_executor
    from alcsp.label import label_structures
    from alcsp.oracle.base import Label
    from alcsp.oracle.factory import make_oracle

    config = load_config(args.config)
    if not args.structures.is_file():
        raise FileNotFoundError(f"structure file {args.structures} does not exist")
    try:
        frames = read(args.structures, index=":", format="extxyz")
    except Exception as exc:
        raise ValueError(f"cannot read {args.structures} as extended XYZ: {exc}") from None
    if not isinstance(frames, list):  # one Atoms, in ASE's type; index=":" gives a list
        frames = [frames]
    if not frames:
        raise ValueError(f"{args.structures} holds no structures")
    # An unusable structure (no atoms, no cell) is the oracle's recorded failure, as in a
    # campaign: it is reported and left out, and the others are labelled.
    workdir = args.workdir or args.out.with_name(args.out.stem + ".jobs")
    oracle = make_oracle(config.oracle, workdir)
    source = _Frames(frames)
    executor = make_executor(config.executor)
    try:
        # _Frames has the three methods of CampaignStore that label_structures calls
        store = cast("CampaignStore", source)
        summary = label_structures(store, oracle, list(range(len(frames))), executor)
    finally:
        executor.close()
    out = []
    for k, atoms in enumerate(frames):
        result = source.results.get(k)
        if isinstance(result, Label):
            a = atoms.copy()
            a.calc = SinglePointCalculator(
                a,
                energy=result.hull_energy,
                free_energy=result.energy,
                forces=result.forces,
                stress=result.stress,
            )
            a.info.update(oracle=result.oracle, attempts=result.attempts)
            out.append(a)
        elif result is not None:
            print(
                f"structure {k} ({atoms.get_chemical_formula()}): {result.kind.value}: "
                f"{_one_line(result.reason)}",
                file=sys.stderr,
            )
    if out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        write(tmp, out, format="extxyz")
        tmp.replace(args.out)
    failed = len(frames) - len(out)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.failures.items()))
    print(
        f"labelled {len(out)} of {len(frames)} structures with {oracle.name}"
        + (f" and wrote them to {args.out}" if out else "")
        + (f"; {failed} failed ({kinds}), left out" if failed else "")
        + f"; job folders in {workdir}"
    )
    if not out:
        print(
            f"alcsp label: error: no structure of {args.structures} could be labelled; see "
            f"the reasons above and the job folders in {workdir}",
            file=sys.stderr,
        )
        return 2
    return 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
