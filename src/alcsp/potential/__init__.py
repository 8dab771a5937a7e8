"""ACNN, the attention-coupled neural-network potential, and the batched-potential interface."""

from alcsp.potential.base import ASEPotential, BatchedPotential
from alcsp.potential.forces import ACNNPotential, energy_forces_stress, graph_for
from alcsp.potential.model import ACNN, ACNNConfig

__all__ = [
    "ACNN",
    "ACNNConfig",
    "ACNNPotential",
    "ASEPotential",
    "BatchedPotential",
    "energy_forces_stress",
    "graph_for",
]
