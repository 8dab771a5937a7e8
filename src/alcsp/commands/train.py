"""``alcsp train DATA.extxyz --out MODEL``: fit an ACNN model to labelled structures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.data import chemical_symbols

if TYPE_CHECKING:
    from ase import Atoms

    from alcsp.potential import ACNN


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an ACNN model on labelled structures (extxyz)",
        description=(
            "Train ACNN on an extended-XYZ file of structures with energy, forces and "
            "(optionally) stress. Hyperparameters come from --config (TOML with optional "
            "[model] and [train] tables, field names as in ACNNConfig and TrainConfig); the "
            "flags below override them."
        ),
    )
    p.add_argument("data", type=Path, help="labelled structures, extended XYZ")
    p.add_argument("--out", type=Path, required=True, help="model file to write")
    p.add_argument("--config", type=Path, help="TOML file with [model] and [train] tables")
    p.add_argument("--init", type=Path, help="warm start from this model file")
    p.add_argument("--validation", type=Path, help="held-out labelled structures (extxyz)")
    p.add_argument("--species", nargs="+", help="elements of the model (default: from the data)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=["float32", "float64"])
    p.add_argument(
        "--max-force",
        type=float,
        metavar="F",
        help="leave out labels with a force component above F eV/Å, as a campaign does "
        "(atoms on top of each other: their energies would dominate the loss); default: "
        "[campaign] train_max_force's default, 50; 0 = train on every label",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def _read_config(path: Path | None) -> tuple[dict, dict]:
    if path is None:
        return {}, {}
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    extra = set(data) - {"model", "train"}
    if extra:
        raise ValueError(f"{path}: unknown tables {sorted(extra)}; use [model] and [train]")
    from alcsp.config import new_names

    return new_names("model", dict(data.get("model", {}))), dict(data.get("train", {}))


def _force_cap(value: float | None) -> float:
    """``--max-force`` in eV/Å (0: no cap); the campaign's default when not given."""
    from alcsp.config import CampaignSettings

    if value is None:
        return CampaignSettings.train_max_force
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"--max-force must be >= 0 eV/Å (0 = no cap), got {value}")
    return value


def _within_force_cap(structures: list[Atoms], path: Path, cap: float) -> list[Atoms]:
    """The structures of ``path`` whose largest force component is at most ``cap`` eV/Å;
    the others are left out with a one-line warning on stderr (an error if none is left)."""
    if cap == 0:
        return structures
    largest = [float(np.abs(a.get_forces()).max()) for a in structures]
    kept = [a for a, f in zip(structures, largest, strict=True) if f <= cap]
    if len(kept) == len(structures):
        return kept
    worst = int(np.argmax(largest))
    if not kept:
        raise ValueError(
            f"every one of the {len(structures)} structures of {path} has a force component "
            f"above {cap:g} eV/Å (atoms on top of each other?); raise --max-force (0 = no cap)"
        )
    print(
        f"alcsp train: warning: left out {len(structures) - len(kept)} of {len(structures)} "
        f"structures of {path} with a force component above {cap:g} eV/Å (largest "
        f"{largest[worst]:.3g} eV/Å, structure {worst}: atoms on top of each other?); "
        "--max-force 0 trains on them",
        file=sys.stderr,
    )
    return kept


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from alcsp.potential import (
        ACNNConfig,
        TrainConfig,
        load_model,
        read_labelled,
        save_model,
        train,
    )

    console = Console(stderr=True)
    model_cfg, train_cfg = _read_config(args.config)
    for name in ("steps", "batch_size", "lr", "seed", "device", "dtype"):
        value = getattr(args, name)
        if value is not None:
            train_cfg[name] = value
    tcfg = TrainConfig.from_dict(train_cfg)
    cap = _force_cap(args.max_force)
    data = _within_force_cap(read_labelled(args.data), args.data, cap)
    validation = (
        _within_force_cap(read_labelled(args.validation), args.validation, cap)
        if args.validation
        else None
    )
    model: ACNN | ACNNConfig  # a model to continue, or the configuration of a new one
    if args.init is not None:
        if model_cfg or args.species:
            raise ValueError("--init continues an existing model: drop [model] and --species")
        model = load_model(args.init)
        present = {chemical_symbols[z] for a in data for z in a.numbers}
        missing = present - set(model.config.species)
        if missing:
            raise ValueError(
                f"the data contain {sorted(missing)}, which the model {args.init} does not know"
            )
    else:
        species = args.species or model_cfg.get("species")
        if species is None:
            numbers = sorted({int(z) for a in data for z in a.numbers})
            species = [chemical_symbols[z] for z in numbers]
        model_cfg["species"] = tuple(species)
        model = ACNNConfig.from_dict(model_cfg)

    console.print(f"training on {len(data)} structures from {args.data} for {tcfg.steps} steps")
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("train", total=tcfg.steps, loss=float("nan"))

        def progress(step, steps, loss, val):
            bar.update(task, completed=step, loss=loss)
            if val is not None:
                bar.console.print(f"step {step}: validation {val}")

        net, report = train(data, model, tcfg, validation=validation, progress=progress)
    save_model(net, args.out, metadata={"train": dataclasses.asdict(tcfg), **report.to_dict()})
    print(f"train:      {report.train}")
    if report.validation is not None:
        print(f"validation: {report.validation}")
    print(json.dumps({"model": str(args.out), **report.to_dict()}))
    return 0
