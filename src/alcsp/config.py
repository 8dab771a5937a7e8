"""The campaign config: one TOML file, validated once, then passed around as typed objects.

Tables (every one optional except ``[campaign]``, ``[compositions]`` and ``[oracle]``)::

    [campaign]     name, seed, pressure (GPa), iteration and oracle budgets, convergence
    [compositions] the search space (alcsp.compositions.rules_from_mapping)
    [generate]     random structures (alcsp.generate.GenerateConfig; pressure comes from
                   [campaign])
    [relax]        batched BFGS settings (alcsp.relax.RelaxConfig)
    [[selection]]  C_max, L_max, B_max, ... (alcsp.select.SelectionConfig); one table per
                   stage, each with ``from_iteration`` (the first applies from iteration 1)
    [dedup]        duplicate tolerances (alcsp.dedup.DedupConfig)
    [model]        ACNN hyperparameters (alcsp.potential.ACNNConfig; species come from
                   [compositions] elements; harmonic_degree was l_max, see ``RENAMED``)
    [train]        training (alcsp.potential.TrainConfig)
    [oracle]       the labelling code (alcsp.oracle.OracleConfig)
    [references]   known phases (built-in element prototypes and structure files), labelled
                   and relaxed by the oracle before iteration 1 (alcsp.references)
    [final]        full oracle relaxation of the lowest distinct structures at the end
    [committee]    the ACNN committee of ``rule = "committee"`` selections
                   (alcsp.committee.CommitteeConfig: size, perturb, steps, workers)
    [executor]     where oracle jobs run (alcsp.execute.ExecutorConfig)

Errors name the table and field and say what is allowed. Every check runs in
``parse_config``, before any campaign directory exists: the type of every field (from the
annotations of the table's dataclass: an integer, a finite number, true or false, a list,
a table), the limits of ``LIMITS`` (values no campaign can run with, such as a search of
2**63 structures per iteration) and each table's own ranges.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import logging
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alcsp.committee import CommitteeConfig
from alcsp.compositions import CompositionRules, rules_from_mapping
from alcsp.dedup import DedupConfig, FingerprintConfig
from alcsp.errors import UserError
from alcsp.execute import DaskConfig, ExecutorConfig
from alcsp.generate import GenerateConfig
from alcsp.oracle.factory import OracleConfig, make_oracle
from alcsp.potential.model import RENAMED_FIELDS, ACNNConfig
from alcsp.potential.train import TrainConfig
from alcsp.references import ReferenceConfig
from alcsp.relax.config import RelaxConfig
from alcsp.select import SelectionConfig, SelectionSchedule

TABLES = (
    "campaign",
    "compositions",
    "generate",
    "relax",
    "selection",
    "dedup",
    "model",
    "train",
    "oracle",
    "final",
    "executor",
    "references",
    "committee",
)


class ConfigError(UserError, ValueError):
    """The config cannot be used; the message names the field and the fix."""


#: Upper limits of fields, (table, field) -> (limit, why): beyond them a campaign would
#: stall or run out of memory instead of failing.
LIMITS: dict[tuple[str, str], tuple[float, str]] = {
    ("campaign", "initial_structures"): (10**6, "random structures labelled by the oracle"),
    ("campaign", "structures_per_iteration"): (
        10**7,
        "random structures relaxed with ACNN per iteration; the paper's searches use 5000",
    ),
    ("campaign", "max_iterations"): (10**4, "active-learning iterations"),
    ("model", "cutoff_radial"): (
        12.0,
        "Å; the neighbours of an atom grow as the cube of the cutoff (typical 4-6 Å)",
    ),
    ("model", "cutoff_angular"): (12.0, "Å; typical 3.5-5 Å"),
}

#: Renamed fields, (table, old name) -> new name: the old name is still read, with a
#: notice (one line through the ``alcsp.config`` logger, once per process); giving both
#: names is an error. ``[model] l_max`` became ``harmonic_degree``, because
#: ``[[selection]] l_max`` (the paper's L_max) has the name too.
RENAMED: dict[tuple[str, str], str] = {("model", old): new for old, new in RENAMED_FIELDS.items()}

#: What the old names were for, in the notice.
_RENAMED_WHY = {
    ("model", "l_max"): (
        "the degree of the descriptor's spherical harmonics, not [[selection]] l_max, "
        "the paper's L_max"
    ),
}

NOTICES = logging.getLogger("alcsp.config")
_noticed: set[str] = set()

T = TypeVar("T")

#: The campaign seed is an integer in [0, SEED_LIMIT) (it seeds NumPy and, times 1000
#: plus the iteration, torch).
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class CampaignSettings:
    """The ``[campaign]`` table."""

    name: str = "campaign"
    seed: int = 0
    pressure: float = 0.0  # GPa
    max_iterations: int = 10  # active-learning iterations after the initial labelling
    initial_structures: int = 500  # N0: random structures labelled before the first model
    structures_per_iteration: int = 5000  # search budget: random structures relaxed per iter.
    relax_chunk: int = 64  # structures relaxed (and committed) together
    oracle_budget: int = 0  # maximum oracle calls in all (0 = no limit)
    hull_tolerance: float = 0.005  # eV/atom: hull "unchanged" if stable energies move less
    hull_patience: int = 2  # K: stop after K iterations with an unchanged hull
    report_ehull: float = 0.05  # eV/atom: near-hull window of reports and the final relax
    train_max_force: float = 50.0  # eV/Å: labels with a larger force component are kept in
    # the store and the hull but not trained on (atoms on top of each other: their energies,
    # up to hundreds of eV/atom, would dominate the loss); 0 = train on everything
    oracle_per_iteration: int = 0  # cap on one iteration's oracle calls; 0 = a fair share of
    # the budget left (left / (iterations left + 1), the final stage counting as one), no
    # cap without an oracle_budget
    failure_share: float = 0.5  # at most this share of an iteration's cap goes to
    # unconverged and unphysical structures
    stop_window: float = 0.0  # eV/atom: the stop rule waits for K iterations in which no new
    # label lands within this of the DFT hull; 0 = 2 x hull_tolerance
    decorations: tuple[str, ...] = ()  # parent lattices ("fcc", "hcp", "bcc") whose every
    # decoration of the space's compositions (up to max_cell_atoms) is relaxed by ACNN in
    # each iteration beside the random cells (alcsp.decorations)

    def __post_init__(self):
        from alcsp.decorations import LATTICES

        if isinstance(self.decorations, str) or not all(
            isinstance(x, str) and x in LATTICES for x in self.decorations
        ):
            raise ConfigError(
                f"[campaign] decorations must be a list of lattices from "
                f"{list(LATTICES)}, got {self.decorations!r}"
            )
        object.__setattr__(self, "decorations", tuple(self.decorations))
        _positive_ints(self, "campaign", ["max_iterations", "relax_chunk", "hull_patience"])
        if not (
            isinstance(self.seed, int)
            and not isinstance(self.seed, bool)
            and 0 <= self.seed < SEED_LIMIT
        ):
            raise ConfigError(
                f"[campaign] seed must be an integer >= 0 and < 2**32, got {self.seed!r}"
            )
        if not self.train_max_force >= 0:
            raise ConfigError("[campaign] train_max_force must be >= 0 eV/Å (0 = no cap)")
        _nonnegative_ints(
            self, "campaign", ["initial_structures", "structures_per_iteration", "oracle_budget"]
        )
        if self.initial_structures == 0:
            raise ConfigError(
                "[campaign] initial_structures must be >= 1: the first model is trained on "
                "the oracle labels of these random structures (e.g. 100), got 0"
            )
        if not math.isfinite(self.pressure) or self.pressure <= -1.0:
            raise ConfigError(
                f"[campaign] pressure must be a finite value in GPa > -1, got {self.pressure}"
            )
        if not self.hull_tolerance > 0:
            raise ConfigError("[campaign] hull_tolerance must be > 0 eV/atom")
        _nonnegative_ints(self, "campaign", ["oracle_per_iteration"])
        if not (_number(self.failure_share) and 0 <= self.failure_share <= 1):
            raise ConfigError(
                f"[campaign] failure_share must be a number in [0, 1], got {self.failure_share!r}"
            )
        if not (_number(self.stop_window) and self.stop_window >= 0):
            raise ConfigError(
                f"[campaign] stop_window must be a number >= 0 eV/atom (0 = 2 x "
                f"hull_tolerance), got {self.stop_window!r}"
            )
        if 0 < self.stop_window < self.hull_tolerance:
            raise ConfigError(
                f"[campaign] stop_window = {self.stop_window} eV/atom is below hull_tolerance "
                f"= {self.hull_tolerance}: a label that close would not change the hull; set "
                "stop_window >= hull_tolerance (or 0 for 2 x hull_tolerance)"
            )
        if not self.report_ehull >= 0:
            raise ConfigError("[campaign] report_ehull must be >= 0 eV/atom")
        if not self.name or "/" in self.name:
            raise ConfigError(f"[campaign] name must be a plain non-empty name, got {self.name!r}")

    @property
    def stop_window_ev(self) -> float:
        """The stop rule's window above the DFT hull, eV/atom."""
        return self.stop_window or 2 * self.hull_tolerance


@dataclass(frozen=True)
class FinalSettings:
    """The ``[final]`` table: oracle relaxations, of the references before iteration 1 and
    of the best candidates at the end.

    The final stage first relaxes every element's best terminal (unless it is already an
    oracle-relaxed structure, e.g. a relaxed reference), then up to M structures: the
    lowest *distinct* (fingerprint-deduplicated) labelled structures of each compound
    within ``e_hull_window`` of the DFT hull, taken round robin over the compositions so
    that a few near-hull compositions cannot take every slot. ``max_steps`` and
    ``max_time_s`` bound each relaxation; one that stops there is stored and marked.
    """

    structures: int = 5  # M (0 = skip the final stage; references are still relaxed)
    fmax: float = 0.01  # eV/Å
    max_steps: int = 200
    e_hull_window: float = 0.1  # eV/atom above the DFT hull
    max_time_s: float = 0.0  # wall seconds per relaxation (0 = no limit)

    def __post_init__(self):
        _nonnegative_ints(self, "final", ["structures"])
        _positive_ints(self, "final", ["max_steps"])
        if not (isinstance(self.fmax, int | float) and self.fmax > 0):
            raise ConfigError("[final] fmax must be > 0 eV/Å (a number)")
        if not (
            isinstance(self.e_hull_window, int | float)
            and self.e_hull_window >= 0
            and math.isfinite(self.e_hull_window)
        ):
            raise ConfigError("[final] e_hull_window must be a finite number >= 0 eV/atom")
        if not (
            isinstance(self.max_time_s, int | float)
            and self.max_time_s >= 0
            and math.isfinite(self.max_time_s)
        ):
            raise ConfigError("[final] max_time_s must be a number of seconds >= 0 (0 = none)")


@dataclass(frozen=True)
class CampaignConfig:
    """Everything a campaign needs, validated."""

    campaign: CampaignSettings
    compositions: CompositionRules
    generate: GenerateConfig
    relax: RelaxConfig
    selection: SelectionSchedule
    dedup: DedupConfig
    model: ACNNConfig
    train: TrainConfig
    oracle: OracleConfig
    final: FinalSettings
    executor: ExecutorConfig
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    committee: CommitteeConfig = field(default_factory=CommitteeConfig)
    text: str = field(default="", compare=False, repr=False)  # the TOML source

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.compositions.elements)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive_ints(obj, table: str, names: list[str]) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"[{table}] {n} must be an integer >= 1, got {v!r}")


def _nonnegative_ints(obj, table: str, names: list[str]) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"[{table}] {n} must be an integer >= 0, got {v!r}")


def _accepts(hint: Any, v: Any) -> bool:
    """Whether the TOML value ``v`` fits the annotation ``hint`` of a config field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: TOML has no None
        return any(_accepts(h, v) for h in args if h is not type(None))
    if origin is typing.Literal:
        return v in args
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return _number(v)
    if hint is str:
        return isinstance(v, str)
    if origin in (tuple, list, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(v, list | tuple) and all(_accepts(item, x) for x in v)
    if origin in (dict, collections.abc.Mapping) or dataclasses.is_dataclass(hint):
        return isinstance(v, dict)
    return True  # Any, or a type a table cannot hold: its own class checks it


def _describe(hint: Any) -> str:
    """What ``_accepts(hint, ...)`` accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in args if h is not type(None))
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (tuple, list, collections.abc.Sequence):
        item = _describe(args[0]) if args and args[0] is not Any else "values"
        return f"a list of {item.removeprefix('a ').removeprefix('an ')}s"
    if origin in (dict, collections.abc.Mapping) or dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[
        hint
    ]


def check_types(cls: type, table: str, values: dict) -> None:
    """Refuse a value of ``values`` whose type does not fit its field of the dataclass
    ``cls`` (unknown names are left to the caller), naming ``[table] field``; then the
    upper limits of ``LIMITS``."""
    hints = typing.get_type_hints(cls)
    for name, v in values.items():
        hint = hints.get(name)
        if hint is not None and not _accepts(hint, v):
            raise ConfigError(f"[{table}] {name} must be {_describe(hint)}, got {v!r}")
        limit = LIMITS.get((table, name))
        if limit is not None and v > limit[0]:
            most = limit[0] if isinstance(limit[0], int) else f"{limit[0]:g}"
            raise ConfigError(f"[{table}] {name} must be at most {most} ({limit[1]}), got {v!r}")


def _table(data: dict, name: str) -> dict:
    """The table ``[name]`` of the parsed config ({} when absent)."""
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"[{name}] must be a table (a [{name}] line with key = value lines below it), "
            f"got {name} = {value!r}"
        )
    return dict(value)


def _build(cls, table: str, values: dict, source: str = "", **fixed):
    """cls(**values, **fixed), naming unknown fields and wrapping validation errors;
    ``source`` says where the ``fixed`` fields come from."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"[{table}] has unknown fields {unknown}; known: {sorted(known)}")
    clash = sorted(set(values) & set(fixed))
    if clash:
        raise ConfigError(
            f"[{table}] must not set {clash}: {source or 'it comes from elsewhere in the config'}"
        )
    return _validated(cls, table, values, lambda: cls(**values, **fixed))


def _validated(cls: type, table: str, values: dict, make: Callable[[], T]) -> T:
    """``make()``, which builds the object of ``[table]`` from ``values``, then
    ``check_types`` (the class may accept a wrong type silently, or reject it with a
    message that does not name the field: then ``check_types`` names it)."""
    try:
        built = make()
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        check_types(cls, table, values)  # raises when a wrong type explains the error
        raise ConfigError(_in_table(table, exc)) from exc
    check_types(cls, table, values)
    return built


def notice(text: str) -> None:
    """Say ``text`` (one line) as a WARNING of the ``alcsp.config`` logger, once per
    process (a config is parsed more than once by some commands)."""
    if text not in _noticed:
        _noticed.add(text)
        NOTICES.warning("alcsp: notice: %s", text)


def new_names(table: str, values: dict) -> dict:
    """``values`` of ``[table]`` with the old names of ``RENAMED`` replaced by the new
    ones (with a notice); a ``ConfigError`` when both names of a field are given."""
    for (t, old), new in RENAMED.items():
        if t != table or old not in values:
            continue
        if new in values:
            raise ConfigError(
                f"[{table}] gives both {old} and {new}; {old} is the old name of {new}: "
                f"keep only {new}"
            )
        values = {(new if k == old else k): v for k, v in values.items()}
        why = _RENAMED_WHY.get((t, old))
        notice(
            f"[{table}] {old} is now called {new}{f' ({why})' if why else ''}; "
            f"read as {new}: write {new} = {values[new]!r} instead"
        )
    return values


def _oracle(raw: dict) -> OracleConfig:
    oracle = OracleConfig.from_dict(raw)
    make_oracle(oracle, Path("."))  # checks name, parameters, retries; touches no file
    return oracle


def _in_table(table: str, exc: Exception) -> str:
    """The message of ``exc``, naming ``[table]`` unless it names a table already."""
    text = str(exc)
    return text if text.startswith("[") else f"[{table}] {text}"


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc


def _compositions(data: dict[str, Any], source: str) -> CompositionRules:
    """The rules of the ``[compositions]`` table of the parsed config ``data``."""
    if "compositions" not in data:
        raise ConfigError(f"{source}: the [compositions] table is required")
    table = _table(data, "compositions")
    plain = {k: v for k, v in table.items() if k not in ("ratio_caps", "joins")}
    return _validated(CompositionRules, "compositions", plain, lambda: rules_from_mapping(table))


def _selection(raw: Any) -> SelectionSchedule:
    if raw is None:
        return SelectionSchedule.from_list([SelectionConfig()])
    tables = [raw] if isinstance(raw, dict) else raw
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            f"[[selection]] must be one or more tables (lines [[selection]] with key = value "
            f"lines below each), got selection = {raw!r}"
        )
    steps: dict[int, SelectionConfig] = {}
    for k, t in enumerate(tables):
        t = dict(t)
        start = t.pop("from_iteration", 1 if k == 0 else None)
        if not isinstance(start, int) or isinstance(start, bool) or start < 1:
            raise ConfigError(
                f"[[selection]] table {k + 1} needs from_iteration = an integer >= 1 "
                "(iterations count from 1)"
            )
        if start in steps or (k == 0 and start != 1):
            raise ConfigError(
                "[[selection]]: the first table applies from iteration 1 and "
                "from_iteration values must be distinct"
            )
        steps[start] = _build(SelectionConfig, "selection", t)
    # The schedule is indexed from 0; iteration 0 is the initial labelling (no selection).
    return SelectionSchedule({0: steps[1], **steps})


def parse_config(text: str, source: str = "config") -> CampaignConfig:
    """Parse and validate a campaign config from TOML text."""
    data = _toml(text, source)
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(f"{source}: unknown tables {unknown}; allowed: {list(TABLES)}")
    for required in ("campaign", "compositions", "oracle"):
        if required not in data:
            raise ConfigError(f"{source}: the [{required}] table is required")
    campaign = _build(CampaignSettings, "campaign", _table(data, "campaign"))
    rules = _compositions(data, source)
    gen = _build(
        GenerateConfig,
        "generate",
        _table(data, "generate"),
        source="the pressure comes from [campaign] pressure (GPa)",
        pressure_gpa=campaign.pressure,
    )
    relax = _build(RelaxConfig, "relax", _table(data, "relax"))
    dedup_raw = _table(data, "dedup")
    if "fingerprint" in dedup_raw:
        dedup_raw["fingerprint"] = _build(
            FingerprintConfig, "dedup.fingerprint", _table(dedup_raw, "fingerprint")
        )
    dedup = _build(DedupConfig, "dedup", dedup_raw)
    model = _build(
        ACNNConfig,
        "model",
        new_names("model", _table(data, "model")),
        source="the species come from [compositions] elements; remove it from [model]",
        species=tuple(rules.elements),
    )
    train = _build(TrainConfig, "train", _table(data, "train"))
    oracle_raw, executor_raw = _table(data, "oracle"), _table(data, "executor")
    oracle = _validated(OracleConfig, "oracle", oracle_raw, lambda: _oracle(oracle_raw))
    dask_raw = _table(executor_raw, "dask")
    _validated(DaskConfig, "executor.dask", dask_raw, lambda: None)
    executor = _validated(
        ExecutorConfig, "executor", executor_raw, lambda: ExecutorConfig.from_dict(executor_raw)
    )
    final = _build(FinalSettings, "final", _table(data, "final"))
    try:
        references = ReferenceConfig.from_dict(_table(data, "references"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    outside = sorted(set(references.prototypes) - set(rules.elements))
    if outside:
        raise ConfigError(
            f"[references] prototypes names elements {outside} outside the campaign's "
            f"{list(rules.elements)}; remove them or add them to [compositions] elements"
        )
    committee = _build(CommitteeConfig, "committee", _table(data, "committee"))
    return CampaignConfig(
        campaign=campaign,
        compositions=rules,
        generate=gen,
        relax=relax,
        selection=_selection(data.get("selection")),
        dedup=dedup,
        model=model,
        train=train,
        oracle=oracle,
        final=final,
        executor=executor,
        references=references,
        committee=committee,
        text=text,
    )


def load_config(path: str | Path) -> CampaignConfig:
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give a config file (TOML)")
        raise FileNotFoundError(f"config file {path} does not exist")
    return parse_config(read_config_text(path), source=str(path))


def load_compositions(path: str | Path) -> CompositionRules:
    """The ``[compositions]`` table of the config file ``path``, checked as in a config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    return _compositions(_toml(read_config_text(path), str(path)), str(path))


def read_config_text(path: Path) -> str:
    """The text of the config file ``path`` (a one-line error unless it is UTF-8 text)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not a text file in UTF-8 (byte {exc.start} is {exc.object[exc.start]:#x}); "
            "give the campaign's TOML config"
        ) from None
