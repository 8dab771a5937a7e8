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
                   [compositions] elements)
    [train]        training (alcsp.potential.TrainConfig)
    [oracle]       the labelling code (alcsp.oracle.OracleConfig)
    [references]   known phases (built-in element prototypes and structure files), labelled
                   and relaxed by the oracle before iteration 1 (alcsp.references)
    [final]        full oracle relaxation of the lowest distinct structures at the end
    [committee]    the ACNN committee of ``rule = "committee"`` selections
                   (alcsp.committee.CommitteeConfig: size, perturb, steps, workers)
    [executor]     where oracle jobs run (alcsp.execute.ExecutorConfig)

Errors name the table and field and say what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alcsp.committee import CommitteeConfig
from alcsp.compositions import CompositionRules, rules_from_mapping
from alcsp.dedup import DedupConfig, FingerprintConfig
from alcsp.execute import ExecutorConfig
from alcsp.generate import GenerateConfig
from alcsp.oracle.factory import OracleConfig, make_oracle
from alcsp.potential.model import ACNNConfig
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


class ConfigError(ValueError):
    """The config cannot be used; the message names the field and the fix."""


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
        if not self.train_max_force >= 0:
            raise ConfigError("[campaign] train_max_force must be >= 0 eV/Å (0 = no cap)")
        _nonnegative_ints(
            self, "campaign", ["initial_structures", "structures_per_iteration", "oracle_budget"]
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
    try:
        return cls(**values, **fixed)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{table}] {exc}") from exc


def _selection(raw: Any) -> SelectionSchedule:
    if raw is None:
        return SelectionSchedule.from_list([SelectionConfig()])
    tables = [raw] if isinstance(raw, dict) else list(raw)
    steps: dict[int, SelectionConfig] = {}
    for k, t in enumerate(tables):
        t = dict(t)
        start = t.pop("from_iteration", 1 if k == 0 else None)
        if not isinstance(start, int) or start < 1:
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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(f"{source}: unknown tables {unknown}; allowed: {list(TABLES)}")
    for required in ("campaign", "compositions", "oracle"):
        if required not in data:
            raise ConfigError(f"{source}: the [{required}] table is required")
    campaign = _build(CampaignSettings, "campaign", dict(data["campaign"]))
    try:
        rules = rules_from_mapping(data["compositions"])
    except ValueError as exc:
        raise ConfigError(f"[compositions] {exc}") from exc
    gen = _build(
        GenerateConfig,
        "generate",
        dict(data.get("generate", {})),
        source="the pressure comes from [campaign] pressure (GPa)",
        pressure_gpa=campaign.pressure,
    )
    relax = _build(RelaxConfig, "relax", dict(data.get("relax", {})))
    dedup_raw = dict(data.get("dedup", {}))
    if "fingerprint" in dedup_raw:
        dedup_raw["fingerprint"] = _build(
            FingerprintConfig, "dedup.fingerprint", dict(dedup_raw["fingerprint"])
        )
    dedup = _build(DedupConfig, "dedup", dedup_raw)
    model = _build(
        ACNNConfig,
        "model",
        dict(data.get("model", {})),
        source="the species come from [compositions] elements; remove it from [model]",
        species=tuple(rules.elements),
    )
    train = _build(TrainConfig, "train", dict(data.get("train", {})))
    try:
        oracle = OracleConfig.from_dict(dict(data["oracle"]))
        make_oracle(oracle, Path("."))  # checks name, parameters, retries; touches no file
        executor = ExecutorConfig.from_dict(dict(data.get("executor", {})))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    final = _build(FinalSettings, "final", dict(data.get("final", {})))
    try:
        references = ReferenceConfig.from_dict(dict(data.get("references", {})))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    outside = sorted(set(references.prototypes) - set(rules.elements))
    if outside:
        raise ConfigError(
            f"[references] prototypes names elements {outside} outside the campaign's "
            f"{list(rules.elements)}; remove them or add them to [compositions] elements"
        )
    committee = _build(CommitteeConfig, "committee", dict(data.get("committee", {})))
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
        raise FileNotFoundError(f"config file {path} does not exist")
    return parse_config(path.read_text(), source=str(path))
