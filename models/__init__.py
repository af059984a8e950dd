"""Graph-neural-network force fields: periodic graphs, architectures, training, ensembles, calculators.

Never imports ray.  The contract other packages rely on is in :mod:`models.interface`.
"""
from models.batch import AtomsBatch
from models.graph import NeighborList, edge_vectors, neighbor_list
from models.interface import ForceField, Prediction
from models.lennard_jones import LennardJones

__all__ = ["AtomsBatch", "NeighborList", "neighbor_list", "edge_vectors", "ForceField", "Prediction", "LennardJones"]
