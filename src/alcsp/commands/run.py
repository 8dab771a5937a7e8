"""``alcsp run CONFIG.toml`` (a new campaign) or ``alcsp run DIR`` (continue one).

One run per campaign directory: the run holds ``DIR/run.lock`` (``alcsp.lock``) from
before it writes anything until its workers are gone; a second run refuses, naming the
first. A killed run's lock is free at once (the kernel drops it with the process).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an active-learning campaign, or continue one",
        description=(
            "Start the campaign described by CONFIG.toml in --dir (default runs/<name>), or "
            "continue the campaign in DIR exactly where it stopped. With DIR, --config "
            "replaces the stored config (e.g. a larger budget) before continuing."
        ),
    )
    p.add_argument("target", type=Path, help="campaign config (TOML) or campaign directory")
    p.add_argument("--dir", type=Path, help="campaign directory for a new campaign")
    p.add_argument("--config", type=Path, help="with DIR: a new config to continue under")
    p.add_argument("--quiet", action="store_true", help="print only the final hull")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from alcsp.campaign import Campaign
    from alcsp.config import load_config
    from alcsp.lock import DirectoryLock
    from alcsp.store import DB_NAME

    console = Console(stderr=True)

    def say(msg: str) -> None:
        if not args.quiet:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}", highlight=False)

    target: Path = args.target
    # Unwound in reverse: the campaign (and its workers) closes before the lock is freed.
    with contextlib.ExitStack() as held:
        if target.is_dir():
            if not (target / DB_NAME).exists():
                raise ValueError(f"{target} is a directory but holds no campaign "
                                 f"({DB_NAME} missing)")
            held.enter_context(DirectoryLock.acquire(target))  # before anything is written
            text = None
            if args.config is not None:
                load_config(args.config)  # validate first
                text = args.config.read_text()
            campaign = Campaign.open(target, say=say, config_text=text,
                                     base_dir=args.config.parent if args.config else ".")
            held.callback(campaign.close)
            directory = target
        elif target.is_file():
            config = load_config(target)
            directory = args.dir or Path("runs") / config.campaign.name
            text = target.read_text()
            if (directory / DB_NAME).exists():
                held.enter_context(DirectoryLock.acquire(directory))
                campaign = Campaign.open(directory, say=say)
                held.callback(campaign.close)
                if campaign.store.config_text != text:
                    raise ValueError(
                        f"{directory} already holds a campaign with a different config; "
                        f"continue it with `alcsp run {directory} --config {target}` (to "
                        "adopt the new config) or choose another --dir"
                    )
                say(f"{directory} already holds this campaign: continuing it")
            else:
                campaign = Campaign.create(directory, text, say=say, base_dir=target.parent)
                try:  # another run may have taken the new campaign already: then it runs it
                    held.enter_context(DirectoryLock.acquire(directory))
                except BaseException:
                    campaign.close()
                    raise
                held.callback(campaign.close)
        else:
            raise FileNotFoundError(f"{target} is neither a config file nor a campaign "
                                    "directory")
        say(f"campaign directory: {directory}")
        hull = campaign.run()
    if hull is None:
        print("no hull: no successful oracle label covers every element")
        return 1
    print(f"stable phases ({len(hull.stable)}):")
    for key, h in sorted(hull.stable.items(), key=lambda kv: kv[1]):
        print(
            f"  {key:<16} formation enthalpy {1000 * h:9.2f} meV/atom"
            f"  (structure {hull.structure_ids[key]})"
        )
    print(f"see `alcsp status {directory}` and `alcsp report {directory}`")
    return 0
