"""The composition space of a search: irreducible compositions and their cell sizes.

A search space is built from up to three sources (union, deduplicated):

* a **grid** of integer atom counts per element (``min_counts``/``max_counts``), filtered by
  ratio caps (e.g. H/(Mg+Ca) <= 16), a cap on atoms in the irreducible formula, and
  optionally charge neutrality from the elements' common oxidation states;
* **joins** between end members: every ``a A + b B + c C`` with integer coefficients
  ``0..max_coefficient`` (pseudo-binary/ternary sections such as BeO-P2O5-P3N5);
* an **explicit** list of formulas.

Each irreducible composition is then scaled to every number of formula units ``z`` with
``min_cell_atoms <= z * n_formula <= max_cell_atoms`` (and ``z <= max_formula_units``).

TOML ``[compositions]`` table (all fields but ``elements`` optional)::

    [compositions]
    elements = ["Mg", "Ca", "H"]            # the chemical system
    grid = true                             # enumerate the count grid (false: joins/explicit only)
    min_counts = {}                         # lower bound per element in the irreducible formula
    max_counts = {Mg = 3, Ca = 3}           # upper bound per element (elements left out are
                                            # bounded by ratio caps or max_formula_atoms)
    ratio_caps = [{numerator = "H", denominators = ["Mg", "Ca"], max_ratio = 16}]
    max_formula_atoms = 80                  # atoms in the irreducible formula
    charge_neutral = false                  # keep only charge-neutral grid compositions
    oxidation_states = {}                   # per-element overrides, e.g. {N = [-3]}
    joins = [{end_members = ["BeO", "P2O5"], max_coefficient = 4}]
    explicit = ["MgH2"]
    include_elements = true                 # always search the pure elements (hull terminals)
    min_cell_atoms = 1                      # cell-size limits for the formula-unit scaling
    max_cell_atoms = 80
    max_formula_units = 0                   # 0: no cap beyond max_cell_atoms

A ratio cap ``n[numerator] <= max_ratio * sum(n[d] for d in denominators)`` applies to
compositions that contain at least one denominator element; pure-numerator compositions (the
H terminal itself) are kept, the hull needs them. Charge neutrality assigns one oxidation
state per element (no mixed valence) from pymatgen's ``common_oxidation_states``.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element

from alcsp.vocab import composition_key

__all__ = [
    "CompositionRules",
    "CompositionSpace",
    "Join",
    "RatioCap",
    "SearchComposition",
    "composition_key",
    "enumerate_compositions",
    "is_charge_neutral",
    "load_rules",
    "rules_from_mapping",
]


def _check_element(symbol: str, where: str) -> str:
    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise ValueError(
            f"{where}: unknown element {symbol!r}; use a chemical symbol such as 'Mg'."
        )
    return symbol


@dataclass(frozen=True)
class RatioCap:
    """``n[numerator] <= max_ratio * sum(n[d] for d in denominators)``."""

    numerator: str
    denominators: tuple[str, ...]
    max_ratio: float

    def __post_init__(self) -> None:
        _check_element(self.numerator, "ratio cap numerator")
        if not self.denominators:
            raise ValueError("ratio cap: denominators is empty; name at least one element.")
        for d in self.denominators:
            _check_element(d, "ratio cap denominator")
        if self.numerator in self.denominators:
            raise ValueError(f"ratio cap: {self.numerator} is both numerator and denominator.")
        if not (self.max_ratio >= 0 and math.isfinite(self.max_ratio)):
            raise ValueError(
                f"ratio cap: max_ratio must be a finite number >= 0, got {self.max_ratio}."
            )

    def allows(self, counts: Mapping[str, int]) -> bool:
        den = sum(counts.get(d, 0) for d in self.denominators)
        if den == 0:  # cap only applies where a denominator element is present
            return True
        return counts.get(self.numerator, 0) <= self.max_ratio * den + 1e-9


@dataclass(frozen=True)
class Join:
    """All ``sum_k c_k * end_member_k`` with integer ``c_k`` in ``0..max_coefficient``."""

    end_members: tuple[str, ...]
    max_coefficient: int

    def __post_init__(self) -> None:
        if len(self.end_members) < 2:
            raise ValueError("join: give at least two end members, e.g. ['BeO', 'P2O5'].")
        if int(self.max_coefficient) < 1:
            raise ValueError(f"join: max_coefficient must be >= 1, got {self.max_coefficient}.")
        for f in self.end_members:
            _parse_formula(f, "join end member")


def _parse_formula(formula: str, where: str) -> Composition:
    try:
        comp = Composition(formula)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise ValueError(f"{where}: cannot parse formula {formula!r} ({exc}).") from exc
    if comp.num_atoms <= 0:
        raise ValueError(f"{where}: formula {formula!r} has no atoms.")
    for el in comp.elements:
        if getattr(el, "symbol", None) is None or el.symbol not in Element.__members__:
            raise ValueError(f"{where}: formula {formula!r} has an unknown element {el}.")
    return comp


@dataclass(frozen=True)
class CompositionRules:
    """Validated rules for a composition space (see module docstring for the semantics)."""

    elements: tuple[str, ...]
    grid: bool = True
    min_counts: Mapping[str, int] = field(default_factory=dict)
    max_counts: Mapping[str, int] = field(default_factory=dict)
    ratio_caps: tuple[RatioCap, ...] = ()
    max_formula_atoms: int | None = None
    charge_neutral: bool = False
    oxidation_states: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    joins: tuple[Join, ...] = ()
    explicit: tuple[str, ...] = ()
    min_cell_atoms: int = 1
    max_cell_atoms: int = 80
    max_formula_units: int | None = None
    include_elements: bool = True

    def __post_init__(self) -> None:
        # normalise user-friendly input (lists, tuples for caps) into the typed form
        els = tuple(self.elements)
        if not els:
            raise ValueError(
                "compositions: elements is empty; give the chemical system, e.g. ['Mg', 'H']."
            )
        for e in els:
            _check_element(e, "compositions.elements")
        if len(set(els)) != len(els):
            raise ValueError(f"compositions.elements has duplicates: {list(els)}.")
        object.__setattr__(self, "elements", els)
        caps = tuple(
            c if isinstance(c, RatioCap) else RatioCap(c[0], tuple(c[1]), float(c[2]))
            for c in self.ratio_caps
        )
        object.__setattr__(self, "ratio_caps", caps)
        joins = tuple(
            j if isinstance(j, Join) else Join(tuple(j[0]), int(j[1])) for j in self.joins
        )
        object.__setattr__(self, "joins", joins)
        object.__setattr__(self, "explicit", tuple(self.explicit))
        for name in ("min_counts", "max_counts"):
            d = dict(getattr(self, name))
            for e, v in d.items():
                if e not in els:
                    _check_element(e, f"compositions.{name}")
                    raise ValueError(f"compositions.{name}: {e} is not in elements {list(els)}.")
                if int(v) != v or v < 0:
                    raise ValueError(f"compositions.{name}[{e}] must be an integer >= 0, got {v}.")
            object.__setattr__(self, name, {e: int(v) for e, v in d.items()})
        for e in els:
            lo, hi = self.min_counts.get(e, 0), self.max_counts.get(e)
            if hi is not None and lo > hi:
                raise ValueError(
                    f"compositions: min_counts[{e}]={lo} > max_counts[{e}]={hi}; "
                    "make the minimum at most the maximum."
                )
        for c in caps:
            for e in (c.numerator, *c.denominators):
                if e not in els:
                    raise ValueError(f"ratio cap uses {e}, which is not in elements {list(els)}.")
        ox = {}
        for e, states in dict(self.oxidation_states).items():
            _check_element(e, "compositions.oxidation_states")
            states = tuple(int(s) for s in states)
            if not states:
                raise ValueError(f"compositions.oxidation_states[{e}] is empty.")
            ox[e] = states
        object.__setattr__(self, "oxidation_states", ox)
        if self.max_formula_atoms is not None and self.max_formula_atoms < 1:
            raise ValueError(
                f"compositions.max_formula_atoms must be >= 1, got {self.max_formula_atoms}."
            )
        if self.min_cell_atoms < 1 or self.max_cell_atoms < self.min_cell_atoms:
            raise ValueError(
                f"compositions: need 1 <= min_cell_atoms <= max_cell_atoms, got "
                f"{self.min_cell_atoms} and {self.max_cell_atoms}."
            )
        if self.max_formula_units is not None and self.max_formula_units < 1:
            raise ValueError(
                f"compositions.max_formula_units must be >= 1, got {self.max_formula_units}."
            )
        for f in self.explicit:
            comp = _parse_formula(f, "compositions.explicit")
            self._check_in_system(comp, f"compositions.explicit {f!r}")
        for j in joins:
            for f in j.end_members:
                self._check_in_system(Composition(f), f"join end member {f!r}")
        if self.grid:
            for e in els:
                if self._upper_bound(e) is None:
                    raise ValueError(
                        f"compositions: the count of {e} is unbounded; set max_counts[{e}], "
                        "a ratio cap with it as numerator, or max_formula_atoms."
                    )
        if not (self.grid or joins or self.explicit):
            raise ValueError(
                "compositions: nothing to enumerate; enable grid or give joins/explicit."
            )

    def _check_in_system(self, comp: Composition, where: str) -> None:
        extra = sorted({el.symbol for el in comp.elements} - set(self.elements))
        if extra:
            raise ValueError(f"{where} contains {extra}, not in elements {list(self.elements)}.")

    def _upper_bound(self, e: str) -> int | None:
        bounds = []
        if e in self.max_counts:
            bounds.append(self.max_counts[e])
        if self.max_formula_atoms is not None:
            bounds.append(self.max_formula_atoms)
        for c in self.ratio_caps:
            if c.numerator == e:
                den = [self._upper_bound_no_cap(d) for d in c.denominators]
                known = [b for b in den if b is not None]
                if len(known) == len(den):
                    bounds.append(int(math.floor(c.max_ratio * sum(known) + 1e-9)))
        return min(bounds) if bounds else None

    def _upper_bound_no_cap(self, e: str) -> int | None:
        bounds = [b for b in (self.max_counts.get(e), self.max_formula_atoms) if b is not None]
        return min(bounds) if bounds else None

    def states(self, e: str) -> tuple[int, ...]:
        """Oxidation states used for charge neutrality (override, else pymatgen common states)."""
        if e in self.oxidation_states:
            return self.oxidation_states[e]
        states = tuple(Element(e).common_oxidation_states)
        return states if states else (0,)


@dataclass(frozen=True)
class SearchComposition:
    """One irreducible composition and the formula-unit counts searched for it."""

    composition: Composition  # irreducible (reduced) composition
    formula_units: tuple[int, ...]  # z values; a cell holds z * composition.num_atoms atoms
    sources: tuple[str, ...]  # 'grid', 'element', 'join', 'explicit'

    @property
    def key(self) -> str:
        """``composition_key`` of the composition (e.g. ``'CaMgH4'``)."""
        return composition_key(self.composition)

    def cell_compositions(self) -> list[Composition]:
        return [self.composition * z for z in self.formula_units]


@dataclass(frozen=True)
class CompositionSpace:
    """The enumerated search space, in a deterministic order."""

    rules: CompositionRules
    entries: tuple[SearchComposition, ...]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    @property
    def n_cells(self) -> int:
        """Number of (composition, formula units) pairs."""
        return sum(len(e.formula_units) for e in self.entries)


def is_charge_neutral(counts: Mapping[str, int], states: Mapping[str, Sequence[int]]) -> bool:
    """True if one oxidation state per element makes the total charge zero."""
    present = [(e, n) for e, n in counts.items() if n > 0]
    # reachable total charges, built element by element (set arithmetic, tiny sets)
    reach = {0}
    for e, n in present:
        reach = {r + n * q for r in reach for q in states[e]}
    return 0 in reach


def _reduce(counts: tuple[int, ...]) -> tuple[int, ...]:
    g = reduce(math.gcd, counts)
    return tuple(c // g for c in counts)


def _grid(rules: CompositionRules) -> Iterable[tuple[int, ...]]:
    els = rules.elements
    lo = [rules.min_counts.get(e, 0) for e in els]
    hi: list[int] = []
    for e in els:
        bound = rules._upper_bound(e)
        assert bound is not None  # a grid needs every bound; checked when the rules are built
        hi.append(bound)
    cap = rules.max_formula_atoms
    states = {e: rules.states(e) for e in els} if rules.charge_neutral else None
    for counts in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi, strict=True))):
        total = sum(counts)
        if total == 0 or (cap is not None and total > cap):
            continue
        if math.gcd(*counts) != 1:
            continue  # not irreducible: its reduced form is enumerated separately
        d = dict(zip(els, counts, strict=True))
        if not all(c.allows(d) for c in rules.ratio_caps):
            continue
        if states is not None and not is_charge_neutral(d, states):
            continue
        yield counts


def _join_points(rules: CompositionRules, join: Join) -> Iterable[tuple[int, ...]]:
    ends = [Composition(f) for f in join.end_members]
    vecs = [[int(round(c[e])) for e in rules.elements] for c in ends]
    for coef in itertools.product(range(join.max_coefficient + 1), repeat=len(ends)):
        if not any(coef):
            continue
        v = [
            sum(k * vec[i] for k, vec in zip(coef, vecs, strict=True))
            for i in range(len(rules.elements))
        ]
        yield _reduce(tuple(v))


def _formula_units(n: int, rules: CompositionRules) -> tuple[int, ...]:
    zmax = rules.max_cell_atoms // n
    if rules.max_formula_units is not None:
        zmax = min(zmax, rules.max_formula_units)
    zmin = max(1, -(-rules.min_cell_atoms // n))
    return tuple(range(zmin, zmax + 1))


def enumerate_compositions(rules: CompositionRules) -> CompositionSpace:
    """Enumerate the irreducible compositions allowed by ``rules`` and their formula units.

    Order: number of elements present, then atoms in the formula, then counts in the order of
    ``rules.elements`` (deterministic). Raises ``ValueError`` if the rules leave nothing, or if
    an explicit composition does not fit the cell-size limits.
    """
    els = rules.elements
    found: dict[tuple[int, ...], list[str]] = {}
    if rules.grid:
        for v in _grid(rules):
            found.setdefault(v, []).append("grid")
    if rules.include_elements:
        for i in range(len(els)):
            v = tuple(int(i == k) for k in range(len(els)))
            found.setdefault(v, [])
            if "element" not in found[v]:
                found[v].append("element")
    for j in rules.joins:
        for v in _join_points(rules, j):
            if sum(v) <= rules.max_cell_atoms:  # a join point larger than the cell is out of range
                found.setdefault(v, [])
                if "join" not in found[v]:
                    found[v].append("join")
    for f in rules.explicit:
        comp = Composition(f)
        v = _reduce(tuple(int(round(comp[e])) for e in els))
        if sum(v) > rules.max_cell_atoms:
            raise ValueError(
                f"compositions.explicit {f!r}: its formula unit has {sum(v)} atoms, more than "
                f"max_cell_atoms={rules.max_cell_atoms}; raise max_cell_atoms or drop it."
            )
        found.setdefault(v, [])
        if "explicit" not in found[v]:
            found[v].append("explicit")
    entries = []
    for v in sorted(found, key=lambda v: (sum(1 for c in v if c), sum(v), v)):
        zs = _formula_units(sum(v), rules)
        if not zs:
            continue  # too large for the cell limits (grid points only; explicit raised above)
        comp = Composition(dict(zip(els, v, strict=True)))
        entries.append(SearchComposition(comp, zs, tuple(found[v])))
    if not entries:
        raise ValueError(
            "compositions: the rules exclude every composition (check count bounds, ratio caps, "
            "charge neutrality and the cell-size limits)."
        )
    return CompositionSpace(rules, tuple(entries))


_TOML_KEYS = {
    "elements",
    "grid",
    "min_counts",
    "max_counts",
    "ratio_caps",
    "max_formula_atoms",
    "charge_neutral",
    "oxidation_states",
    "joins",
    "explicit",
    "min_cell_atoms",
    "max_cell_atoms",
    "max_formula_units",
    "include_elements",
}


def rules_from_mapping(d: Mapping[str, Any]) -> CompositionRules:
    """Build rules from a ``[compositions]`` table (a dict); unknown keys raise ``ValueError``."""
    unknown = sorted(set(d) - _TOML_KEYS)
    if unknown:
        raise ValueError(
            f"[compositions]: unknown key(s) {unknown}; allowed: {sorted(_TOML_KEYS)}."
        )
    if "elements" not in d:
        raise ValueError("[compositions]: 'elements' is required, e.g. elements = ['Mg', 'H'].")
    kw: dict[str, Any] = {k: v for k, v in d.items() if k not in ("ratio_caps", "joins")}
    caps = []
    for i, c in enumerate(d.get("ratio_caps", [])):
        if not isinstance(c, Mapping) or set(c) != {"numerator", "denominators", "max_ratio"}:
            raise ValueError(
                f"[compositions].ratio_caps[{i}] needs exactly numerator, denominators, "
                f"max_ratio; got {c!r}."
            )
        caps.append(RatioCap(c["numerator"], tuple(c["denominators"]), float(c["max_ratio"])))
    joins = []
    for i, j in enumerate(d.get("joins", [])):
        if not isinstance(j, Mapping) or set(j) != {"end_members", "max_coefficient"}:
            raise ValueError(
                f"[compositions].joins[{i}] needs exactly end_members, max_coefficient; got {j!r}."
            )
        joins.append(Join(tuple(j["end_members"]), int(j["max_coefficient"])))
    if kw.get("max_formula_units") == 0:
        kw["max_formula_units"] = None
    kw["elements"] = tuple(kw["elements"])
    return CompositionRules(ratio_caps=tuple(caps), joins=tuple(joins), **kw)


def load_rules(path: str | Path) -> CompositionRules:
    """Read the ``[compositions]`` table of a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc}).") from exc
    if "compositions" not in data:
        raise ValueError(f"{path}: no [compositions] table.")
    return rules_from_mapping(data["compositions"])
