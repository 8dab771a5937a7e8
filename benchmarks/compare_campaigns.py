"""Whether two campaign directories hold the same campaign, row for row: for the
``labels``, ``relaxations`` and ``structures`` tables (the columns a result depends on, not
timings), the row counts and the first row that differs; and whether the final hulls are
identical. For "same seed, same result" checks across versions (docs/demo.md).

    python benchmarks/compare_campaigns.py DIR_A DIR_B
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

COLUMNS = {
    "labels": "structure_id, iteration, ok, energy, forces, stress, energy_zero",
    "relaxations": "structure_id, initial_id, status, energy, enthalpy_per_atom, volume, steps, "
    "fingerprint, e_hull",
    "structures": "id, numbers, positions, cell",
}


def _connect(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{directory / 'campaign.sqlite'}?mode=ro", uri=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    a, b = _connect(args.a), _connect(args.b)
    for table, cols in COLUMNS.items():
        rows_a = a.execute(f"SELECT {cols} FROM {table} ORDER BY rowid").fetchall()
        rows_b = b.execute(f"SELECT {cols} FROM {table} ORDER BY rowid").fetchall()
        first = next(
            (k for k, (x, y) in enumerate(zip(rows_a, rows_b, strict=False)) if x != y), None
        )
        if first is None and len(rows_a) != len(rows_b):
            first = min(len(rows_a), len(rows_b))
        print(f"{table}: {len(rows_a)} and {len(rows_b)} rows, first difference: {first}")
    hulls = [
        c.execute("SELECT value FROM meta WHERE key = 'final_hull'").fetchone() for c in (a, b)
    ]
    same = None not in hulls and json.loads(hulls[0][0]) == json.loads(hulls[1][0])
    print(f"final hull identical: {same}")
    for name, h in zip((args.a, args.b), hulls, strict=True):
        print(f"  {name}: {json.loads(h[0])['stable'] if h else None}")


if __name__ == "__main__":
    main()
