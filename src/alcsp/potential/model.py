"""ACNN: the attention-coupled neural-network potential of the paper (eqs. 1–15).

    E = Σ_i E_i,   E_i = fit( mlp(Φ¹_i) ‖ mlp(Φ²_i) [→ attention blocks] ‖ onehot(Z_i) ) + μ_{Z_i}
                         + E^rep_i

E^rep is a fixed (untrained) short-range ZBL repulsion (``repulsion.py``; ``repulsion="none"``
drops it), so the network learns E_DFT − E^rep. The model maps edge vectors to atomic energies;
forces and stress come from one autograd pass in ``forces.py`` (kept apart, as in NequIP/MACE).
Shape letters as in ``descriptors.py``; D is the embedding width (twice the last embedding layer).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from torch import nn

from alcsp.potential.descriptors import Descriptor, cosine_cutoff
from alcsp.potential.neighbours import Graph
from alcsp.potential.repulsion import REPULSIONS, ZBLRepulsion


@dataclass(frozen=True)
class ACNNConfig:
    """Hyperparameters of an ACNN model. Defaults are the paper's (section II.D, Mg–Ca–H)."""

    species: tuple[str, ...]
    cutoff_radial: float = 5.0  # r_c^r, Å
    cutoff_angular: float = 4.0  # r_c^a, Å
    n_radial: int = 16  # n_max^r, two-body channels
    n_angular: int = 14  # n_max^a, three-body channels
    basis_radial: int = 12  # Chebyshev functions mixed into each radial channel
    basis_angular: int = 12  # Chebyshev functions mixed into each angular channel
    harmonic_degree: int = 4  # degree of the spherical harmonics of Φ², 0..4 (was l_max)
    embedding: tuple[int, ...] = (64, 64)
    fitting: tuple[int, ...] = (256, 256)
    attention_layers: int = 0  # paper: off for large-scale CSP
    attention_heads: int = 4
    seed: int = 0  # initial weights
    # Short-range prior (repulsion.py): "zbl" or "none". The ZBL pair energy is switched off
    # between inner and outer × (sum of the two covalent radii); see repulsion.py for why
    # 0.35 and 0.75. Model files without these fields (older alcsp) load as "none".
    repulsion: str = "zbl"
    repulsion_inner: float = 0.35
    repulsion_outer: float = 0.75

    def __post_init__(self):
        species = tuple(self.species)
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "embedding", tuple(int(x) for x in self.embedding))
        object.__setattr__(self, "fitting", tuple(int(x) for x in self.fitting))
        if not species:
            raise ValueError("ACNNConfig.species is empty: list the elements, e.g. ['Mg', 'H'].")
        unknown = [s for s in species if s not in atomic_numbers]
        if unknown:
            raise ValueError(f"ACNNConfig.species has unknown elements {unknown}.")
        if len(set(species)) != len(species):
            raise ValueError(f"ACNNConfig.species has duplicates: {list(species)}.")
        if not (0 < self.cutoff_angular <= self.cutoff_radial):
            raise ValueError(
                f"cutoffs must satisfy 0 < cutoff_angular <= cutoff_radial, got "
                f"{self.cutoff_angular} and {self.cutoff_radial} Å."
            )
        for name in ("n_radial", "n_angular", "basis_radial", "basis_angular"):
            if getattr(self, name) < 1:
                raise ValueError(f"ACNNConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.harmonic_degree <= 4:
            raise ValueError(
                f"ACNNConfig.harmonic_degree must be in 0..4, got {self.harmonic_degree}."
            )
        if not self.embedding or not self.fitting or min(self.embedding + self.fitting) < 1:
            raise ValueError("ACNNConfig.embedding and .fitting need at least one positive width.")
        if self.attention_layers < 0 or self.attention_heads < 1:
            raise ValueError("attention_layers must be >= 0 and attention_heads >= 1.")
        self._check_repulsion()
        width = 2 * self.embedding[-1]
        if self.attention_layers and width % self.attention_heads:
            raise ValueError(
                f"attention_heads ({self.attention_heads}) must divide the embedding width "
                f"2*embedding[-1] = {width}."
            )

    def _check_repulsion(self) -> None:
        if not isinstance(self.repulsion, str) or self.repulsion not in REPULSIONS:
            raise ValueError(
                f"ACNNConfig.repulsion must be one of {list(REPULSIONS)}, got {self.repulsion!r}."
            )
        fractions = (self.repulsion_inner, self.repulsion_outer)
        if not all(isinstance(f, int | float) and not isinstance(f, bool) for f in fractions):
            raise ValueError(
                "ACNNConfig.repulsion_inner and .repulsion_outer must be numbers (fractions of "
                f"the covalent-radius sum), got {self.repulsion_inner!r} and "
                f"{self.repulsion_outer!r}."
            )
        object.__setattr__(self, "repulsion_inner", float(self.repulsion_inner))
        object.__setattr__(self, "repulsion_outer", float(self.repulsion_outer))
        if not 0.0 <= self.repulsion_inner < self.repulsion_outer <= 1.5:
            raise ValueError(
                "ACNNConfig repulsion fractions must satisfy 0 <= repulsion_inner < "
                f"repulsion_outer <= 1.5, got {self.repulsion_inner} and {self.repulsion_outer} "
                "(defaults 0.35 and 0.75 of the covalent-radius sum)."
            )
        if self.repulsion == "zbl":
            rsum = 2 * max(covalent_radii[atomic_numbers[s]] for s in self.species)
            if self.repulsion_outer * rsum > self.cutoff_angular:
                raise ValueError(
                    f"ACNNConfig.repulsion_outer × covalent-radius sum = "
                    f"{self.repulsion_outer * rsum:.2f} Å exceeds cutoff_angular "
                    f"{self.cutoff_angular} Å; the repulsion needs its pairs in the angular slots."
                )

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ACNNConfig:
        """The config of ``to_dict``; the old names of ``RENAMED_FIELDS`` (in model files
        of older alcsp) are read as the new ones."""
        d = with_new_names(d)
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(
                f"unknown ACNN hyperparameters {sorted(extra)}; known: {sorted(known)}"
            )
        return cls(**d)

    @property
    def l_max(self) -> int:
        """Deprecated: the old name of ``harmonic_degree``."""
        warnings.warn(
            "ACNNConfig.l_max is now called harmonic_degree", DeprecationWarning, stacklevel=2
        )
        return self.harmonic_degree


#: Old names of ``ACNNConfig`` fields -> their names now. ``l_max`` was renamed because
#: ``[[selection]] l_max`` (the paper's L_max, structures per composition) has the name too.
#: Model files, configs and ``ACNNConfig(...)`` calls with an old name still work.
RENAMED_FIELDS = {"l_max": "harmonic_degree"}


def with_new_names(d: Mapping[str, Any], where: str = "ACNNConfig") -> dict[str, Any]:
    """``d`` with the old field names of ``RENAMED_FIELDS`` replaced by the new ones;
    ``ValueError`` (naming ``where``) when both names of a field are given."""
    out = dict(d)
    for old, new in RENAMED_FIELDS.items():
        if old in out:
            if new in out:
                raise ValueError(
                    f"{where} gives both {old} and {new}; {old} is the old name of {new}: "
                    f"keep only {new}"
                )
            out[new] = out.pop(old)
    return out


_dataclass_init = ACNNConfig.__init__


@functools.wraps(_dataclass_init)
def _init_accepting_old_names(self: ACNNConfig, *args: Any, **kwargs: Any) -> None:
    if any(old in kwargs for old in RENAMED_FIELDS):
        warnings.warn(
            "ACNNConfig(l_max=...) is now ACNNConfig(harmonic_degree=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        kwargs = with_new_names(kwargs)
    _dataclass_init(self, *args, **kwargs)


setattr(ACNNConfig, "__init__", _init_accepting_old_names)  # noqa: B010 (mypy: no method assignment)


def mlp(
    sizes: list[int], final_activation: bool, generator: torch.Generator | None
) -> nn.Sequential:
    """f_L ∘ … ∘ f_1 with f_l(x) = tanh(W_l x + b_l) (eqs. 11–12); last layer linear if asked."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=generator) / math.sqrt(a))
            lin.bias.zero_()
        layers.append(lin)
        if final_activation or k < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head self-attention over the radial neighbours (eqs. 13–15), with a residual.

    S_ij = f_c(r_ij)·cos(q_i, k_j)/τ, τ trainable and clamped ≥ 0.01. So that the energy stays
    smooth when a neighbour crosses the cutoff, the softmax weights are also multiplied by
    f_c(r_ij) (a neighbour at r_c has weight exactly 0, not exp(0)/Z); each atom attends to
    itself too (f_c(0) = 1), so an atom without neighbours is well defined.
    """

    def __init__(self, width: int, heads: int, cutoff: float, generator: torch.Generator | None):
        super().__init__()
        self.heads, self.cutoff = heads, cutoff
        self.qkv = mlp([width, 3 * width], final_activation=False, generator=generator)
        self.out = mlp([width, width], final_activation=False, generator=generator)
        self.log_tau = nn.Parameter(torch.tensor(math.log(0.5)))

    def forward(self, x: torch.Tensor, dist: torch.Tensor, graph: Graph) -> torch.Tensor:
        """x [N, D] features, dist [N, R] radial-slot distances -> updated features [N, D]."""
        n, width = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(n, 3, h, width // h).unbind(1)  # each [N, H, D/H]
        q = nn.functional.normalize(q, dim=-1)
        k = nn.functional.normalize(k, dim=-1)
        tau = self.log_tau.exp().clamp_min(0.01)
        nbr = graph.radial.neighbour  # [N, R]; unused slots have f_c = 0
        k_all = torch.cat([k[nbr], k.unsqueeze(1)], dim=1)  # [N, R+1, H, D/H] (+ self)
        v_all = torch.cat([v[nbr], v.unsqueeze(1)], dim=1)  # [N, R+1, H, D/H]
        fc = torch.cat([cosine_cutoff(dist, self.cutoff), dist.new_ones(n, 1)], dim=1)  # [N, R+1]
        score = fc.unsqueeze(-1) * (q.unsqueeze(1) * k_all).sum(-1) / tau  # [N, R+1, H]
        # Softmax over each atom's neighbours; the shift by the max cancels exactly.
        shift = score.detach().amax(dim=1, keepdim=True)  # [N, 1, H]
        w = fc.unsqueeze(-1) * torch.exp(score - shift)  # [N, R+1, H]
        w = w / w.sum(dim=1, keepdim=True)
        agg = (w.unsqueeze(-1) * v_all).sum(dim=1).reshape(n, width)  # [N, D]
        return x + self.out(agg)


class ACNN(nn.Module):
    """The ACNN energy model: edge vectors of a batch -> atomic energies [N] in eV."""

    # buffers (register_buffer in __init__)
    phi1_mean: torch.Tensor
    phi1_std: torch.Tensor
    phi2_mean: torch.Tensor
    phi2_std: torch.Tensor
    energy_shift: torch.Tensor
    energy_scale: torch.Tensor
    species_lookup: torch.Tensor

    def __init__(self, config: ACNNConfig):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        t = len(config.species)
        self.descriptor = Descriptor(
            n_species=t,
            cutoff_radial=config.cutoff_radial,
            cutoff_angular=config.cutoff_angular,
            n_radial=config.n_radial,
            n_angular=config.n_angular,
            basis_radial=config.basis_radial,
            basis_angular=config.basis_angular,
            l_max=config.harmonic_degree,
            generator=gen,
        )
        d1, d2 = self.descriptor.n_features_radial, self.descriptor.n_features_angular
        self.embed_radial = mlp([d1, *config.embedding], final_activation=True, generator=gen)
        self.embed_angular = mlp([d2, *config.embedding], final_activation=True, generator=gen)
        width = 2 * config.embedding[-1]
        self.attention = nn.ModuleList(
            Attention(width, config.attention_heads, config.cutoff_radial, gen)
            for _ in range(config.attention_layers)
        )
        self.fit = mlp([width + t, *config.fitting, 1], final_activation=False, generator=gen)
        # Descriptor standardisation and energy shift/scale, fitted from data (train.py).
        self.register_buffer("phi1_mean", torch.zeros(d1))
        self.register_buffer("phi1_std", torch.ones(d1))
        self.register_buffer("phi2_mean", torch.zeros(d2))
        self.register_buffer("phi2_std", torch.ones(d2))
        self.register_buffer("energy_shift", torch.zeros(t))  # μ_Z, eV/atom
        self.register_buffer("energy_scale", torch.ones(()))  # eV
        # Atomic number -> species index (-1: not a species of this model).
        lookup = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for k, s in enumerate(config.species):
            lookup[atomic_numbers[s]] = k
        self.register_buffer("species_lookup", lookup, persistent=False)
        # Fixed short-range prior; its tables are derived from the config, not in the state dict.
        self.repulsion: ZBLRepulsion | None = (
            ZBLRepulsion(config.species, config.repulsion_inner, config.repulsion_outer)
            if config.repulsion == "zbl"
            else None
        )

    @property
    def n_species(self) -> int:
        return len(self.config.species)

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """[N] atomic numbers -> [N] species indices; a clear error for foreign elements."""
        idx = self.species_lookup.to(numbers.device)[numbers.clamp(0, len(chemical_symbols) - 1)]
        if bool((idx < 0).any()) or bool((numbers >= len(chemical_symbols)).any()):
            bad = sorted({int(z) for z in numbers[idx < 0].tolist()})
            names = [chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in bad]
            raise ValueError(
                f"elements {names} are not species of this model {list(self.config.species)}; "
                "use a model trained on them or remove those atoms."
            )
        return idx

    def forward(
        self, vec_r: torch.Tensor, vec_a: torch.Tensor, graph: Graph, fused: bool = False
    ) -> torch.Tensor:
        """Neighbour vectors vec_r [N, R, 3], vec_a [N, Q, 3] -> atomic energies [N] eV.

        ``fused=True`` runs the descriptor's neighbour sums in the C++ kernels (CPU).
        """
        phi1, phi2 = self.descriptor(vec_r, vec_a, graph, fused)  # [N, n_r], [N, n_a(l+1)]
        x = torch.cat(
            [
                self.embed_radial((phi1 - self.phi1_mean) / self.phi1_std),
                self.embed_angular((phi2 - self.phi2_mean) / self.phi2_std),
            ],
            dim=1,
        )  # [N, D]
        if len(self.attention):
            dist = torch.linalg.vector_norm(vec_r, dim=-1)  # [N, R]
            for block in self.attention:
                x = block(x, dist, graph)
        onehot = nn.functional.one_hot(graph.species, self.n_species).to(x.dtype)  # [N, T]
        e = self.fit(torch.cat([x, onehot], dim=1)).squeeze(1)  # [N]
        e = e * self.energy_scale + self.energy_shift[graph.species]  # [N]
        if self.repulsion is not None:
            e = e + self.repulsion_energy(vec_a, graph)  # [N]
        return e

    def repulsion_energy(self, vec_a: torch.Tensor, graph: Graph) -> torch.Tensor:
        """The fixed prior's atomic energies [N] eV from the angular slot vectors vec_a [N, Q, 3]
        (every r_out is below r_c^a, and there are about half as many angular slots as radial
        ones to scan); zeros for ``repulsion="none"``."""
        if self.repulsion is None:
            return vec_a.new_zeros(vec_a.shape[0])
        return self.repulsion(vec_a, graph.angular, graph.species)
