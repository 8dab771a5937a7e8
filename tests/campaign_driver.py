"""Run (or continue) a campaign and SIGKILL this process at a chosen point (test helper).

    python tests/campaign_driver.py CONFIG DIR [--kill-at-job N] [--kill-on TEXT]

``--kill-at-job N``: SIGKILL just before the N-th oracle job this process starts (so N-1
outcomes of this run are committed); ``--kill-on TEXT``: SIGKILL when the campaign reports a
progress message containing TEXT. Without either it runs to the end (exit code 0).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from alcsp.campaign import Campaign
from alcsp.store import DB_NAME


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config", type=Path)
    p.add_argument("directory", type=Path)
    p.add_argument("--kill-at-job", type=int)
    p.add_argument("--kill-on")
    args = p.parse_args()

    def say(msg: str) -> None:
        if args.kill_on and args.kill_on in msg:
            os.kill(os.getpid(), signal.SIGKILL)

    if (args.directory / DB_NAME).exists():
        campaign = Campaign.open(args.directory, say=say)
    else:
        campaign = Campaign.create(args.directory, args.config.read_text(), say=say)
    if args.kill_at_job:
        label_one, jobs = campaign.oracle.label_one, 0

        def counting(atoms, key):
            nonlocal jobs
            jobs += 1
            if jobs == args.kill_at_job:
                os.kill(os.getpid(), signal.SIGKILL)
            return label_one(atoms, key)

        campaign.oracle.label_one = counting
    try:
        campaign.run()
    finally:
        campaign.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
