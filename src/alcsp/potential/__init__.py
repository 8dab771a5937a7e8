"""ACNN, the attention-coupled neural-network potential, and the batched-potential interface."""

from alcsp.potential.base import ASEPotential, BatchedPotential

__all__ = ["ASEPotential", "BatchedPotential"]
