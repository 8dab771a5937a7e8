"""A corpus of bad input (issue 16, item 2), each case run through the real CLI
(``alcsp.cli.main`` in-process, as in test_operating.py; a subprocess under another user
for the read-only directories).

Configs (type and range errors of every table, absurd values, malformed TOML, unknown
keys, missing files), structure files, model files, CLI misuse and damaged campaign
directories (a database with random bytes written into its pages, a read-only directory,
a deleted or planted model, a directory that is not a campaign). Every case asserts:

* exit status 2;
* stderr is exactly one line, ``alcsp CMD: error: ...`` (no traceback), and it names the
  problem (the table and field, the option or the file);
* nothing changed: every file and folder under the case's folder (inputs, campaign
  directories) has the same contents afterwards, and nothing was created (no campaign
  directory, no output file).

Beyond the lines: the advice of torch to load a model with ``weights_only=False`` is never
given (it would run code from the file).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from alcsp.cli import COMMANDS, main
from alcsp.lock import LOCK_NAME
from alcsp.potential.io import labelled
from alcsp.store import DB_NAME

# ---------------------------------------------------------------------- the base config

#: A small, valid Cu–Au campaign (EMT): the cases change one thing in it. Values are TOML.
BASE: dict[str, dict[str, str]] = {
    "campaign": {
        "name": '"bad-input"',
        "seed": "3",
        "max_iterations": "1",
        "initial_structures": "8",
        "structures_per_iteration": "8",
        "relax_chunk": "8",
    },
    "compositions": {"elements": '["Cu", "Au"]', "max_formula_atoms": "2", "max_cell_atoms": "2"},
    "relax": {"max_steps": "30", "fmax": "0.05"},
    "selection": {"c_max": "2", "l_max": "1", "b_max": "8"},
    "model": {
        "n_radial": "4",
        "n_angular": "4",
        "basis_radial": "4",
        "basis_angular": "4",
        "embedding": "[8]",
        "fitting": "[8]",
    },
    "train": {"steps": "20", "eval_every": "10", "decay_every": "10"},
    "oracle": {"name": '"emt"'},
    "final": {"structures": "0"},
    "executor": {"kind": '"inline"'},
}


def config(**tables: dict[str, str | None]) -> str:
    """BASE with some keys set (a TOML value) or removed (None), per table;
    ``selection`` is the one [[selection]] table, ``dedup__fingerprint`` [dedup.fingerprint]."""
    merged = {name: dict(values) for name, values in BASE.items()}
    for name, values in tables.items():
        table = merged.setdefault(name.replace("__", "."), {})
        for key, value in values.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    out = []
    for name, values in merged.items():
        out.append(f"[[{name}]]" if name == "selection" else f"[{name}]")
        out += [f"{k} = {v}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- inputs of a case


class Inputs:
    """Makes the inputs of one case in its folder ``root`` (also the working directory)."""

    def __init__(self, root: Path, campaign: Path):
        self.root = root
        self._campaign = campaign

    def file(self, name: str, content: str | bytes = "") -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return name

    def config(self, text: str, name: str = "c.toml") -> str:
        return self.file(name, text)

    def campaign(self, name: str = "camp") -> str:
        """A copy of a finished one-iteration campaign (with one model)."""
        shutil.copytree(self._campaign, self.root / name)
        return name

    def model(self, name: str = "model.pt") -> str:
        """A valid model file (the campaign's)."""
        shutil.copy(next((self._campaign / "models").glob("*.pt")), self.root / name)
        return name

    def structures(self, name: str = "in.extxyz", labels: bool = True) -> str:
        """Cu, Au and Cu3Au cells, with EMT labels unless ``labels`` is false."""
        frames = []
        for a, gold in ((3.6, 0), (4.1, 4), (3.7, 1)):
            atoms = bulk("Cu", "fcc", a=a, cubic=True)
            atoms.numbers[:gold] = 79
            if labels:
                atoms.calc = EMT()
                atoms = labelled(
                    atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
                )
            frames.append(atoms)
        write(self.root / name, frames, format="extxyz")
        return name

    def xyz(self, name: str, symbol: str = "Cu", extra: str = "") -> str:
        """A one-atom extxyz frame written by hand (any symbol, any info)."""
        return self.file(
            name,
            f'1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 {extra} pbc="T T T"\n'
            f"{symbol} 0 0 0\n",
        )


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Inputs], list[str]]  # makes the inputs, returns the argv
    says: tuple[str, ...]  # the one line contains each of these
    unprivileged: bool = False  # in a subprocess that meets file permissions as users do


CASES: list[Case] = []


def case(name: str, says: str | tuple[str, ...], unprivileged: bool = False):
    def register(prepare: Callable[[Inputs], list[str]]) -> Callable[[Inputs], list[str]]:
        words = (says,) if isinstance(says, str) else says
        CASES.append(Case(name, prepare, words, unprivileged))
        return prepare

    return register


def run_config(text: str) -> Callable[[Inputs], list[str]]:
    return lambda i: ["run", i.config(text), "--dir", "new-campaign", "--quiet"]


def config_case(name: str, says: str | tuple[str, ...], **tables: dict[str, str | None]) -> None:
    case(f"config-{name}", says)(run_config(config(**tables)))


def raw_config_case(name: str, says: str | tuple[str, ...], text: str | bytes) -> None:
    case(f"config-{name}", says)(lambda i: ["run", i.file("c.toml", text), "--dir", "new"])


# ---------------------------------------------------------------------- 1. configs

# [campaign]
config_case("seed-float", ("[campaign] seed", "integer"), campaign={"seed": "1.5"})
config_case("seed-string", ("[campaign] seed", "integer"), campaign={"seed": '"one"'})
config_case("seed-negative", ("[campaign] seed", ">= 0"), campaign={"seed": "-1"})
config_case("seed-huge", ("[campaign] seed", "2**32"), campaign={"seed": str(2**40)})
config_case(
    "initial-structures-zero",
    ("[campaign] initial_structures", ">= 1"),
    campaign={"initial_structures": "0"},
)
config_case(
    "structures-per-iteration-absurd",
    ("[campaign] structures_per_iteration", "at most"),
    campaign={"structures_per_iteration": str(2**63 - 1)},
)
config_case(
    "max-iterations-absurd",
    ("[campaign] max_iterations", "at most"),
    campaign={"max_iterations": str(10**12)},
)
config_case(
    "max-iterations-string",
    ("[campaign] max_iterations", "integer"),
    campaign={"max_iterations": '"3"'},
)
config_case("pressure-string", ("[campaign] pressure", "number"), campaign={"pressure": '"300"'})
config_case("pressure-nan", ("[campaign] pressure", "finite"), campaign={"pressure": "nan"})
config_case(
    "hull-tolerance-negative",
    ("[campaign] hull_tolerance", "> 0"),
    campaign={"hull_tolerance": "-0.1"},
)
config_case(
    "stop-window-below-hull-tolerance",
    ("[campaign] stop_window", "hull_tolerance"),
    campaign={"stop_window": "0.001", "hull_tolerance": "0.005"},
)
config_case(
    "report-ehull-string",
    ("[campaign] report_ehull", "number"),
    campaign={"report_ehull": '"0.05"'},
)
config_case(
    "train-max-force-string",
    ("[campaign] train_max_force", "number"),
    campaign={"train_max_force": '"big"'},
)
config_case(
    "failure-share-above-one",
    ("[campaign] failure_share", "[0, 1]"),
    campaign={"failure_share": "2"},
)
config_case("name-empty", ("[campaign] name", "non-empty"), campaign={"name": '""'})
config_case(
    "decorations-unknown",
    ("[campaign] decorations", "diamond"),
    campaign={"decorations": '["diamond"]'},
)
config_case(
    "oracle-budget-negative",
    ("[campaign] oracle_budget", ">= 0"),
    campaign={"oracle_budget": "-1"},
)
config_case("unknown-field", ("[campaign]", "sede"), campaign={"sede": "1"})

# [compositions]
config_case("unknown-element", ("[compositions]", "Xx"), compositions={"elements": '["Cu", "Xx"]'})
config_case("no-elements", ("[compositions]", "elements"), compositions={"elements": "[]"})
config_case(
    "max-formula-atoms-zero",
    ("[compositions]", "max_formula_atoms"),
    compositions={"max_formula_atoms": "0"},
)
config_case(
    "max-formula-atoms-string",
    ("[compositions]", "max_formula_atoms"),
    compositions={"max_formula_atoms": '"4"'},
)

# [generate]
config_case(
    "distance-factor-string",
    ("[generate] distance_factor", "number"),
    generate={"distance_factor": '"0.7"'},
)
config_case(
    "distance-factor-too-large",
    ("[generate]", "distance_factor"),
    generate={"distance_factor": "5.0"},
)
config_case(
    "space-groups-range", ("[generate]", "space_groups"), generate={"space_groups": "[0, 231]"}
)
config_case(
    "space-groups-string", ("[generate] space_groups", "list"), generate={"space_groups": '"P1"'}
)
config_case("engine-unknown", ("[generate]", "engine"), generate={"engine": '"slow"'})
config_case(
    "pressure-in-generate",
    ("[generate]", "pressure_gpa", "[campaign] pressure"),
    generate={"pressure_gpa": "10.0"},
)

# [relax]
config_case("relax-fmax-negative", ("[relax]", "fmax"), relax={"fmax": "-1.0"})
config_case(
    "relax-max-steps-string", ("[relax] max_steps", "integer"), relax={"max_steps": '"many"'}
)
config_case(
    "relax-fixed-cell-string",
    ("[relax] fixed_cell", "true or false"),
    relax={"fixed_cell": '"yes"'},
)

# [[selection]]
config_case("kappa-negative", ("[selection]", "kappa"), selection={"kappa": "-1.0"})
config_case("c-max-float", ("[selection]", "c_max"), selection={"c_max": "1.5"})
config_case("l-max-string", ("[selection]", "l_max"), selection={"l_max": '"three"'})
config_case("rule-unknown", ("[selection]", "rule", "greedy"), selection={"rule": '"greedy"'})
config_case(
    "from-iteration-zero", ("[[selection]]", "from_iteration"), selection={"from_iteration": "0"}
)
config_case(
    "committee-rule-committee-of-one",
    ("[committee]", "size", "2"),
    selection={"rule": '"committee"'},
    committee={"size": "1"},
)

# [dedup]
config_case("dedup-energy-tol-zero", ("[dedup]", "energy_tol"), dedup={"energy_tol": "0.0"})
config_case(
    "dedup-distance-tol-string", ("[dedup] distance_tol", "number"), dedup={"distance_tol": '"x"'}
)
config_case(
    "fingerprint-r-max-negative",
    ("[dedup.fingerprint]", "r_max"),
    dedup__fingerprint={"r_max": "-1.0"},
)

# [model]
config_case(
    "cutoff-radial-absurd", ("[model] cutoff_radial", "at most"), model={"cutoff_radial": "1e6"}
)
config_case(
    "cutoff-angular-above-radial",
    ("[model]", "cutoff_angular"),
    model={"cutoff_radial": "4.0", "cutoff_angular": "5.0"},
)
config_case("embedding-string", ("[model] embedding", "list"), model={"embedding": '"wide"'})
config_case(
    "harmonic-degree-too-large", ("[model]", "harmonic_degree"), model={"harmonic_degree": "7"}
)
config_case(
    "model-l-max-and-harmonic-degree",
    ("[model]", "both l_max and harmonic_degree"),
    model={"l_max": "2", "harmonic_degree": "2"},
)
config_case("n-radial-zero", ("[model]", "n_radial"), model={"n_radial": "0"})
config_case(
    "species-in-model",
    ("[model]", "species", "[compositions] elements"),
    model={"species": '["Cu", "Au"]'},
)

# [train]
config_case("lr-string", ("[train] lr", "number"), train={"lr": '"fast"'})
config_case("lr-zero", ("[train]", "lr"), train={"lr": "0.0"})
config_case("train-steps-zero", ("[train]", "steps"), train={"steps": "0"})
config_case("dtype-unknown", ("[train]", "dtype"), train={"dtype": '"float16"'})
config_case("batch-size-negative", ("[train]", "batch_size"), train={"batch_size": "-4"})
config_case(
    "validation-fraction-above-one",
    ("[train]", "validation_fraction"),
    train={"validation_fraction": "1.5"},
)

# [oracle]
config_case("oracle-unknown", ("[oracle]", "nosuch"), oracle={"name": '"nosuch"'})
config_case("oracle-name-missing", ("[oracle]", "name"), oracle={"name": None, "isolate": "false"})
config_case(
    "oracle-unknown-parameter",
    ("[oracle.parameters]", "ecut"),
    oracle={"parameters": "{ ecut = 300 }"},
)
config_case(
    "oracle-timeout-string", ("[oracle] timeout_s", "number"), oracle={"timeout_s": '"ten"'}
)
config_case("oracle-timeout-negative", ("[oracle] timeout_s", "> 0"), oracle={"timeout_s": "-5"})
config_case("oracle-retry-on-string", ("[oracle] retry_on", "list"), oracle={"retry_on": '"crash"'})
config_case(
    "oracle-isolate-string", ("[oracle] isolate", "true or false"), oracle={"isolate": '"yes"'}
)

# [final]
config_case("final-fmax-zero", ("[final] fmax", "> 0"), final={"fmax": "0.0"})
config_case("final-structures-negative", ("[final] structures", ">= 0"), final={"structures": "-1"})
config_case(
    "final-window-string", ("[final] e_hull_window", "number"), final={"e_hull_window": '"0.1"'}
)

# [executor]
config_case(
    "executor-kind-unknown", ("[executor]", "carrier-pigeon"), executor={"kind": '"carrier-pigeon"'}
)
config_case("executor-workers-negative", ("[executor] workers", ">= 0"), executor={"workers": "-1"})
config_case(
    "executor-workers-string", ("[executor] workers", "integer"), executor={"workers": '"two"'}
)

# [references]
config_case(
    "references-unknown-element",
    ("[references]", "Xx"),
    references={"prototypes": '{ Xx = ["fcc"] }'},
)
config_case(
    "references-unknown-prototype",
    ("[references]", "diamondish"),
    references={"prototypes": '{ Cu = ["diamondish"] }'},
)
config_case(
    "references-element-outside",
    ("[references]", "Ni"),
    references={"prototypes": '{ Ni = ["fcc"] }'},
)
config_case(
    "references-missing-file",
    ("[references]", "missing.cif"),
    references={"files": '["missing.cif"]'},
)

# [committee]
config_case("committee-size-one", ("[committee]", "size"), committee={"size": "1"})
config_case("committee-perturb-negative", ("[committee]", "perturb"), committee={"perturb": "-0.1"})
config_case("committee-steps-string", ("[committee] steps", "integer"), committee={"steps": '"x"'})

# the file itself
raw_config_case("unknown-table", "modle", config() + "\n[modle]\nembedding = [8]\n")
raw_config_case("malformed-toml", "not valid TOML", "[campaign\nname = 1\n")
raw_config_case(
    "duplicate-key", "not valid TOML", config().replace("seed = 3", "seed = 3\nseed = 4")
)
raw_config_case("no-oracle-table", "[oracle] table is required", config().split("[oracle]")[0])
raw_config_case("empty-file", "[campaign] table is required", "")
raw_config_case("binary-garbage", ("c.toml", "UTF-8"), bytes(range(128, 256)) * 4)
raw_config_case(
    "table-is-a-value",
    ("[oracle]", "table"),
    'oracle = "emt"\n' + config().replace('[oracle]\nname = "emt"\n', ""),
)


@case("config-missing-file", "missing.toml")
def _(i: Inputs) -> list[str]:
    return ["run", "missing.toml", "--dir", "new"]


@case("config-references-empty-file", ("[references]", "empty.extxyz"))
def _(i: Inputs) -> list[str]:
    i.file("empty.extxyz")
    return run_config(config(references={"files": '["empty.extxyz"]'}))(i)


@case("compositions-bad-config", ("[compositions]", "Xx"))
def _(i: Inputs) -> list[str]:
    return ["compositions", i.config(config(compositions={"elements": '["Xx"]'}))]


@case("label-bad-config", ("[train] lr", "number"))
def _(i: Inputs) -> list[str]:
    text = config(train={"lr": '"fast"'})
    return ["label", i.structures(labels=False), "--config", i.config(text), "--out", "o.extxyz"]


# ---------------------------------------------------------------------- 2. structure files

GARBAGE = "this is not\na structure file\n\x00\x01 at all\n"


@case("hull-empty-file", "empty.extxyz")
def _(i: Inputs) -> list[str]:
    return ["hull", i.file("empty.extxyz")]


@case("hull-garbage", "garbage.extxyz")
def _(i: Inputs) -> list[str]:
    return ["hull", i.file("garbage.extxyz", GARBAGE)]


@case("hull-unknown-element", "Xx")
def _(i: Inputs) -> list[str]:
    return ["hull", i.xyz("xx.extxyz", "Xx", "energy=-1.0")]


@case("hull-no-energies", "energ")
def _(i: Inputs) -> list[str]:
    return ["hull", i.structures(labels=False)]


@case("hull-missing-file", "missing.extxyz")
def _(i: Inputs) -> list[str]:
    return ["hull", "missing.extxyz"]


@case("hull-reference-enthalpy-not-a-number", "--reference")
def _(i: Inputs) -> list[str]:
    return ["hull", i.structures(), "--reference", "ref.cif=low"]


@case("train-empty-file", "empty.extxyz")
def _(i: Inputs) -> list[str]:
    return ["train", i.file("empty.extxyz"), "--out", "m.pt", "--quiet"]


@case("train-garbage", "garbage.extxyz")
def _(i: Inputs) -> list[str]:
    return ["train", i.file("garbage.extxyz", GARBAGE), "--out", "m.pt", "--quiet"]


@case("train-no-labels", "energy")
def _(i: Inputs) -> list[str]:
    return ["train", i.structures(labels=False), "--out", "m.pt", "--quiet"]


@case("train-unknown-element", "Xx")
def _(i: Inputs) -> list[str]:
    return ["train", i.xyz("xx.extxyz", "Xx", "energy=-1.0"), "--out", "m.pt", "--quiet"]


@case("train-missing-file", "missing.extxyz")
def _(i: Inputs) -> list[str]:
    return ["train", "missing.extxyz", "--out", "m.pt", "--quiet"]


@case("relax-empty-file", "empty.extxyz")
def _(i: Inputs) -> list[str]:
    return ["relax", i.file("empty.extxyz"), "--emt", "--out", "o.extxyz", "--quiet"]


@case("relax-garbage", "garbage.extxyz")
def _(i: Inputs) -> list[str]:
    return ["relax", i.file("garbage.extxyz", GARBAGE), "--emt", "--out", "o.extxyz", "--quiet"]


@case("relax-unknown-element", "Xx")
def _(i: Inputs) -> list[str]:
    return ["relax", i.xyz("xx.extxyz", "Xx"), "--emt", "--out", "o.extxyz", "--quiet"]


@case("relax-element-outside-the-model", ("Fe", "model"))
def _(i: Inputs) -> list[str]:
    model = i.model()
    return ["relax", i.xyz("fe.extxyz", "Fe"), "--model", model, "--out", "o.extxyz", "--quiet"]


@case("label-empty-file", "empty.extxyz")
def _(i: Inputs) -> list[str]:
    return ["label", i.file("empty.extxyz"), "--config", i.config(config()), "--out", "o.extxyz"]


@case("label-garbage", "garbage.extxyz")
def _(i: Inputs) -> list[str]:
    garbage = i.file("garbage.extxyz", GARBAGE)
    return ["label", garbage, "--config", i.config(config()), "--out", "o.extxyz"]


@case("label-missing-file", "missing.extxyz")
def _(i: Inputs) -> list[str]:
    return ["label", "missing.extxyz", "--config", i.config(config()), "--out", "o.extxyz"]


@case("generate-unknown-element", "--composition")
def _(i: Inputs) -> list[str]:
    return ["generate", "--composition", "Xx2", "--count", "1", "--out", "o.extxyz"]


@case("generate-garbage-formula", "--composition")
def _(i: Inputs) -> list[str]:
    return ["generate", "--composition", "Cu-?!", "--count", "1", "--out", "o.extxyz"]


# ---------------------------------------------------------------------- 3. model files


def _relax_with(model: str) -> Callable[[Inputs], list[str]]:
    def prepare(i: Inputs) -> list[str]:
        return ["relax", i.structures(), "--model", model, "--out", "o.extxyz", "--quiet"]

    return prepare


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _torch_file(i: Inputs, name: str, payload: object) -> str:
    import torch

    torch.save(payload, i.root / name)
    return name


@case("model-empty-file", "model.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with(i.file("model.pt"))(i)


@case("model-random-bytes", "model.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with(i.file("model.pt", random.Random(1).randbytes(4096)))(i)


@case("model-pickle-of-a-list", "model.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with(i.file("model.pt", pickle.dumps(["not", "a", "model"])))(i)


@case("model-malicious-pickle", "model.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with(i.file("model.pt", pickle.dumps(_Evil())))(i)


@case("model-torch-file-of-a-list", "model.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with(_torch_file(i, "model.pt", [1, 2, 3]))(i)


@case("model-wrongly-typed-payload", "model.pt")
def _(i: Inputs) -> list[str]:
    payload = {"format": "alcsp-acnn", "version": 1, "config": 7, "state_dict": "weights"}
    return _relax_with(_torch_file(i, "model.pt", payload))(i)


@case("model-payload-without-weights", "model.pt")
def _(i: Inputs) -> list[str]:
    payload = {"format": "alcsp-acnn", "version": 1, "config": {"species": ["Cu"]}}
    return _relax_with(_torch_file(i, "model.pt", payload))(i)


@case("model-newer-format-version", ("model.pt", "version"))
def _(i: Inputs) -> list[str]:
    return _relax_with(_torch_file(i, "model.pt", {"format": "alcsp-acnn", "version": 99}))(i)


@case("model-truncated", "model.pt")
def _(i: Inputs) -> list[str]:
    data = (i.root / i.model()).read_bytes()
    return _relax_with(i.file("model.pt", data[: len(data) // 2]))(i)


@case("model-missing", "missing.pt")
def _(i: Inputs) -> list[str]:
    return _relax_with("missing.pt")(i)


@case("model-is-a-directory", "models")
def _(i: Inputs) -> list[str]:
    (i.root / "models").mkdir()
    return _relax_with("models")(i)


@case("train-init-random-bytes", "init.pt")
def _(i: Inputs) -> list[str]:
    init = i.file("init.pt", random.Random(2).randbytes(4096))
    return ["train", i.structures(), "--init", init, "--out", "m.pt", "--quiet"]


@case("train-init-truncated", "init.pt")
def _(i: Inputs) -> list[str]:
    data = (i.root / i.model()).read_bytes()
    init = i.file("init.pt", data[: len(data) - 100])
    return ["train", i.structures(), "--init", init, "--out", "m.pt", "--quiet"]


# ---------------------------------------------------------------------- 4. CLI misuse


@case("cli-no-command", "COMMAND")
def _(i: Inputs) -> list[str]:
    return []


@case("cli-unknown-command", "frobnicate")
def _(i: Inputs) -> list[str]:
    return ["frobnicate"]


@case("cli-missing-argument", "target")
def _(i: Inputs) -> list[str]:
    return ["run"]


@case("cli-unknown-option", "--frobnicate")
def _(i: Inputs) -> list[str]:
    return ["status", i.campaign(), "--frobnicate"]


@case("export-ehull-nan", "--ehull")
def _(i: Inputs) -> list[str]:
    return ["export", i.campaign(), "--ehull", "nan"]


@case("export-ehull-negative", "--ehull")
def _(i: Inputs) -> list[str]:
    return ["export", i.campaign(), "--ehull", "-0.1"]


@case("export-ehull-not-a-number", "--ehull")
def _(i: Inputs) -> list[str]:
    return ["export", i.campaign(), "--ehull", "low"]


@case("export-out-is-a-file", ("--out", "taken"))
def _(i: Inputs) -> list[str]:
    return ["export", i.campaign(), "--out", i.file("taken", "mine")]


@case("report-ehull-nan", "--ehull")
def _(i: Inputs) -> list[str]:
    return ["report", i.campaign(), "--ehull", "nan"]


@case("report-out-is-a-file", ("--out", "taken"))
def _(i: Inputs) -> list[str]:
    return ["report", i.campaign(), "--out", i.file("taken", "mine")]


@case("analyse-ehull-nan", "--ehull")
def _(i: Inputs) -> list[str]:
    return ["analyse", i.campaign(), "--ehull", "nan"]


@case("generate-count-negative", "--count")
def _(i: Inputs) -> list[str]:
    return ["generate", "--composition", "CuAu", "--count", "-3", "--out", "o.extxyz"]


@case("generate-count-not-a-number", "--count")
def _(i: Inputs) -> list[str]:
    return ["generate", "--composition", "CuAu", "--count", "ten", "--out", "o.extxyz"]


@case("generate-pressure-nan", "--pressure")
def _(i: Inputs) -> list[str]:
    return ["generate", "--composition", "CuAu", "--pressure", "nan", "--out", "o.extxyz"]


@case("generate-distance-factor-zero", "--distance-factor")
def _(i: Inputs) -> list[str]:
    argv = ["generate", "--composition", "CuAu", "--distance-factor", "0", "--out", "o.extxyz"]
    return argv


@case("collect-max-force-negative", "--max-force")
def _(i: Inputs) -> list[str]:
    return ["collect", i.campaign(), "--out", "o.extxyz", "--max-force", "-1"]


@case("collect-max-force-nan", "--max-force")
def _(i: Inputs) -> list[str]:
    return ["collect", i.campaign(), "--out", "o.extxyz", "--max-force", "nan"]


@case("hull-pressure-nan", "--pressure")
def _(i: Inputs) -> list[str]:
    return ["hull", i.structures(), "--pressure", "nan"]


@case("relax-pressure-nan", "--pressure")
def _(i: Inputs) -> list[str]:
    return ["relax", i.structures(), "--emt", "--pressure", "nan", "--out", "o.extxyz", "--quiet"]


@case("train-steps-negative", "steps")
def _(i: Inputs) -> list[str]:
    return ["train", i.structures(), "--out", "m.pt", "--steps", "-5", "--quiet"]


@case("converge-jobs-zero", "--jobs")
def _(i: Inputs) -> list[str]:
    return ["converge", i.config(config()), "--jobs", "0"]


@case("converge-energy-tol-negative", "--energy-tol")
def _(i: Inputs) -> list[str]:
    return ["converge", i.config(config()), "--energy-tol", "-1"]


@case("status-no-such-directory", "nowhere")
def _(i: Inputs) -> list[str]:
    return ["status", "nowhere"]


@case("status-of-a-file", "c.toml")
def _(i: Inputs) -> list[str]:
    return ["status", i.config(config())]


@case("report-no-such-directory", "nowhere")
def _(i: Inputs) -> list[str]:
    return ["report", "nowhere"]


@case("export-no-such-directory", "nowhere")
def _(i: Inputs) -> list[str]:
    return ["export", "nowhere"]


@case("collect-no-such-directory", "nowhere")
def _(i: Inputs) -> list[str]:
    return ["collect", "nowhere", "--out", "o.extxyz"]


@case("analyse-no-such-directory", "nowhere")
def _(i: Inputs) -> list[str]:
    return ["analyse", "nowhere"]


@case("run-with-missing-new-config", "missing.toml")
def _(i: Inputs) -> list[str]:
    return ["run", i.campaign(), "--config", "missing.toml", "--quiet"]


@case("run-with-bad-new-config", ("[train] lr", "number"))
def _(i: Inputs) -> list[str]:
    return ["run", i.campaign(), "--config", i.config(config(train={"lr": '"fast"'})), "--quiet"]


@case("run-dir-is-a-file", ("taken", "file"))
def _(i: Inputs) -> list[str]:
    return ["run", i.config(config()), "--dir", i.file("taken", "mine"), "--quiet"]


@case("run-config-differs-from-the-stored-one", ("different config", "--config"))
def _(i: Inputs) -> list[str]:
    text = config(campaign={"max_iterations": "2"})
    return ["run", i.config(text), "--dir", i.campaign(), "--quiet"]


@case("compositions-missing-config", "missing.toml")
def _(i: Inputs) -> list[str]:
    return ["compositions", "missing.toml"]


@case("label-missing-config", "missing.toml")
def _(i: Inputs) -> list[str]:
    return ["label", i.structures(labels=False), "--config", "missing.toml", "--out", "o.extxyz"]


# ---------------------------------------------------------------------- 5. damaged directories


def _pages(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return int(c.execute("PRAGMA page_count").fetchone()[0])


def _problems(db: Path) -> str:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            return "\n".join(r[0] for r in c.execute("PRAGMA integrity_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)


def _scribble(db: Path, page: int, seed: int, page_size: int = 8192) -> None:
    """Random bytes over a page of ``db`` (its 100-byte header spared)."""
    with open(db, "r+b") as f:
        f.seek((page - 1) * page_size + 100)
        f.write(random.Random(seed).randbytes(page_size - 100))


def corrupt_one_page(i: Inputs) -> str:
    """A campaign with random bytes over one b-tree page that SQLite's integrity check
    finds damaged (pages of blob payload it cannot judge are skipped)."""
    camp = i.campaign()
    db = i.root / camp / DB_NAME
    clean = db.read_bytes()
    for page in range(_pages(db), 1, -1):
        _scribble(db, page, seed=page)
        if _problems(db) != "ok":
            return camp
        db.write_bytes(clean)
    raise AssertionError("no page whose damage SQLite's integrity check sees")


def corrupt_every_page(i: Inputs) -> str:
    camp = i.campaign()
    db = i.root / camp / DB_NAME
    for page in range(2, _pages(db) + 1):
        _scribble(db, page, seed=page)
    return camp


def _meta(i: Inputs, camp: str, key: str, value: str) -> None:
    with sqlite3.connect(i.root / camp / DB_NAME) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    c.close()


for _command in ("status", "run", "report", "export", "collect", "analyse"):
    _extra = {"run": ["--quiet"], "collect": ["--out", "o.extxyz"]}.get(_command, [])

    case(f"{_command}-one-damaged-page", (DB_NAME, "damaged"))(
        lambda i, c=_command, e=_extra: [c, corrupt_one_page(i), *e]
    )
    case(f"{_command}-every-page-damaged", (DB_NAME, "damaged"))(
        lambda i, c=_command, e=_extra: [c, corrupt_every_page(i), *e]
    )


@case("status-database-is-random-bytes", (DB_NAME, "not a campaign database"))
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    (i.root / camp / DB_NAME).write_bytes(random.Random(3).randbytes(64 * 1024))
    return ["status", camp]


@case("run-database-is-random-bytes", (DB_NAME, "not a campaign database"))
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    (i.root / camp / DB_NAME).write_bytes(random.Random(4).randbytes(64 * 1024))
    return ["run", camp, "--quiet"]


@case("status-database-truncated", (DB_NAME, "damaged"))
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    db = i.root / camp / DB_NAME
    db.write_bytes(db.read_bytes()[: 8192 * (_pages(db) // 2)])
    return ["status", camp]


@case("status-table-missing", ("labels", "damaged"))
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    with sqlite3.connect(i.root / camp / DB_NAME) as c:
        c.execute("DROP TABLE labels")
    c.close()
    return ["status", camp]


@case("status-newer-schema", "schema version")
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    _meta(i, camp, "schema_version", "99")
    return ["status", camp]


@case("run-newer-schema", "schema version")
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    _meta(i, camp, "schema_version", "99")
    return ["run", camp, "--quiet"]


@case("run-stored-config-unreadable", "stored config")
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    _meta(i, camp, "config", "[campaign\nthis is not TOML")
    return ["run", camp, "--quiet"]


@case("export-stored-config-unreadable", "stored config")
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    _meta(i, camp, "config", "[campaign\nthis is not TOML")
    return ["export", camp]


@case("run-deleted-model", ("acnn-001.pt", "missing"))
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    (i.root / camp / "models" / "acnn-001.pt").unlink()
    bigger = i.config(config(campaign={"max_iterations": "2"}))
    return ["run", camp, "--config", bigger, "--quiet"]


@case("run-planted-model", "acnn-001.pt")
def _(i: Inputs) -> list[str]:
    camp = i.campaign()
    (i.root / camp / "models" / "acnn-001.pt").write_bytes(pickle.dumps(_Evil()))
    bigger = i.config(config(campaign={"max_iterations": "2"}))
    return ["run", camp, "--config", bigger, "--quiet"]


@case("run-read-only-directory", ("write access",), unprivileged=True)
def _(i: Inputs) -> list[str]:
    return ["run", _read_only(i), "--quiet"]


@case("report-read-only-directory", ("--out",), unprivileged=True)
def _(i: Inputs) -> list[str]:
    return ["report", _read_only(i)]


@case("export-read-only-directory", ("--out",), unprivileged=True)
def _(i: Inputs) -> list[str]:
    return ["export", _read_only(i)]


def _read_only(i: Inputs) -> str:
    camp = i.campaign()
    for path in [i.root / camp, *(i.root / camp).rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return camp


def _not_a_campaign(i: Inputs) -> str:
    i.file("plain/notes.txt", "my notes")
    return "plain"


for _command in ("run", "status", "report", "export", "collect", "analyse"):
    _extra = {"run": ["--quiet"], "collect": ["--out", "o.extxyz"]}.get(_command, [])
    case(f"{_command}-not-a-campaign", ("plain", "no campaign"))(
        lambda i, c=_command, e=_extra: [c, _not_a_campaign(i), *e]
    )


@case("status-database-is-a-directory", DB_NAME)
def _(i: Inputs) -> list[str]:
    (i.root / "odd" / DB_NAME).mkdir(parents=True)
    return ["status", "odd"]


# ---------------------------------------------------------------------- the test


@pytest.fixture(scope="session")
def finished_campaign(tmp_path_factory) -> Path:
    """A finished one-iteration campaign of BASE (EMT, a tiny model): about 10 s."""
    root = tmp_path_factory.mktemp("bad-input-campaign")
    (root / "c.toml").write_text(config())
    code = main(["run", str(root / "c.toml"), "--dir", str(root / "camp"), "--quiet"])
    assert code == 0
    assert list((root / "camp" / "models").glob("*.pt")) == [root / "camp/models/acnn-001.pt"]
    return root / "camp"


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under ``root``: its kind and contents (sha256). The lock file
    counts by its presence (what it holds names the last process that took it), SQLite's
    shared-memory index not at all, an empty write-ahead log as no log."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "folder"
        elif path.name == LOCK_NAME:
            out[rel] = "lock"
        elif path.name.endswith("-shm"):
            continue
        elif path.name.endswith("-wal") and path.stat().st_size == 0:
            continue
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _alarm(signum, frame):
    raise TimeoutError("the command ran for 120 s: bad input must be refused at once")


def _in_process(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # a traceback for the user
            pytest.fail(f"{argv} raised {type(exc).__name__}: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, capsys.readouterr().err


def _without_file_capabilities() -> None:
    """In the child, before exec: drop the capabilities that let root read, write and
    chmod regardless of permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER)
    from the bounding set, so that the command it runs meets permissions as a user does."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _without_privileges(argv: list[str], root: Path) -> tuple[int, str]:
    """The command in a subprocess that meets file permissions as a user does (root may
    write anywhere: as root, without the capabilities that allow it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # XDG_CONFIG_HOME: the test's own
    proc = subprocess.run(
        [sys.executable, "-m", "alcsp.cli", *argv],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_without_file_capabilities if os.geteuid() == 0 else None,
    )
    return proc.returncode, proc.stderr


@pytest.fixture
def case_root(tmp_path):
    """The case's folder (made writable again afterwards, for its removal)."""
    yield tmp_path
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


#: Cases known to fail, with the fix they need (strict xfail: a fix makes them fail here).
XFAIL: dict[str, str] = {}


def _params() -> list:
    marks = {n: pytest.mark.xfail(strict=True, reason=why) for n, why in XFAIL.items()}
    return [pytest.param(c, id=c.name, marks=marks.get(c.name, ())) for c in CASES]


@pytest.mark.parametrize("bad", _params())
def test_bad_input_is_refused_in_one_line_and_changes_nothing(
    bad: Case, case_root: Path, finished_campaign: Path, capsys, monkeypatch, tmp_path_factory
):
    monkeypatch.chdir(case_root)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = bad.prepare(Inputs(case_root, finished_campaign))
    before = snapshot(case_root)
    if bad.unprivileged:
        code, err = _without_privileges(argv, case_root)
    else:
        code, err = _in_process(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    (line,) = lines
    assert line.startswith("alcsp") and ": error: " in line, line
    if argv and argv[0] in COMMANDS:
        assert line.startswith(f"alcsp {argv[0]}: error: "), line
    assert "Traceback" not in line and "weights_only" not in line, line
    for words in bad.says:
        assert words in line, f"{words!r} not in {line!r}"
    assert snapshot(case_root) == before  # nothing changed, nothing created
    assert not (case_root / "pwned").exists()


def test_the_corpus_is_large_and_its_names_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert set(XFAIL) <= set(names)
    assert len(CASES) - len(XFAIL) >= 80


def test_the_base_config_and_the_inputs_are_valid(tmp_path, finished_campaign, capsys, monkeypatch):
    """The cases fail because of what they change, not because the base is broken."""
    from alcsp.config import parse_config

    monkeypatch.chdir(tmp_path)
    parse_config(config())
    inputs = Inputs(tmp_path, finished_campaign)
    assert main(["hull", inputs.structures()]) == 0
    model = inputs.model()
    assert main(["relax", "in.extxyz", "--model", model, "--out", "o.extxyz", "--quiet"]) == 0
    assert main(["train", "in.extxyz", "--out", "m.pt", "--steps", "2", "--quiet"]) == 0
    assert main(["status", inputs.campaign()]) == 0
    assert "damaged" not in capsys.readouterr().out


@pytest.mark.parametrize("limit_kib", [48, 160])
def test_a_full_disk_stops_alcsp_run_in_one_line_and_the_campaign_resumes(tmp_path, limit_kib):
    """A disk that fills up during `alcsp run` (a file size limit, RLIMIT_FSIZE, so every
    write past it fails as on a full disk): exit 2, one line that says to free space, no
    traceback; run again with space, the campaign finishes, and its hull is that of a run
    that never hit the limit."""
    import resource

    from alcsp.store.summary import summary

    (tmp_path / "c.toml").write_text(config())
    limit = limit_kib * 1024

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, "-m", "alcsp.cli", "run", "c.toml", "--dir", "camp", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(
        cmd, cwd=tmp_path, env=env, preexec_fn=small_disk, capture_output=True, text=True
    )
    assert full.returncode == 2, full.stderr[-3000:]
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "disk" in lines[0] and lines[0].startswith("alcsp run: error:"), lines
    again = subprocess.run(
        [*cmd[:4], "camp", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    if not (tmp_path / "camp" / DB_NAME).exists():  # the limit hit before the campaign
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    ref = subprocess.run(
        [*cmd[:5], "--dir", "ref", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    got, want = summary(tmp_path / "camp"), summary(tmp_path / "ref")
    assert [it["stable"] for it in got["iterations"]] == [it["stable"] for it in want["iterations"]]
    assert (got["labels"], got["structures"]) == (want["labels"], want["structures"])
