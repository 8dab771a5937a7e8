"""ACNN, the attention-coupled neural-network potential, and the batched-potential interface.

ACNN, ACNNConfig         the torch module and its hyperparameters
ZBLRepulsion             the fixed short-range prior inside ACNN (ACNNConfig.repulsion)
ACNNPotential            a model as a BatchedPotential: compute(batch) -> E [S], F [N,3], σ [S,3,3]
ACNNCalculator           a model as an ASE calculator
train, TrainConfig       fitting to labelled structures (eq. 16)
save_model, load_model   one safe file per model
"""

from alcsp.potential.base import ASEPotential, BatchedPotential
from alcsp.potential.calculator import ACNNCalculator
from alcsp.potential.forces import ACNNPotential, energy_forces_stress, graph_for
from alcsp.potential.io import load_model, read_labelled, save_model, write_labelled
from alcsp.potential.model import ACNN, ACNNConfig
from alcsp.potential.repulsion import ZBLRepulsion
from alcsp.potential.train import Metrics, TrainConfig, TrainReport, evaluate, train

__all__ = [
    "ACNN",
    "ACNNCalculator",
    "ACNNConfig",
    "ACNNPotential",
    "ASEPotential",
    "BatchedPotential",
    "Metrics",
    "TrainConfig",
    "TrainReport",
    "ZBLRepulsion",
    "energy_forces_stress",
    "evaluate",
    "graph_for",
    "load_model",
    "read_labelled",
    "save_model",
    "train",
    "write_labelled",
]
