"""Graph-neural-network force fields: periodic graphs, architectures, training, ensembles, calculators.

Never imports ray.  The contract other packages rely on is in :mod:`models.interface`.

    model = models.build_model("schnet", elements=[3, 15, 16, 32])     # or painn, dimenetpp, cgcnn
    result = models.fit(model, frames, config=models.TrainConfig(max_time_s=600), out="ff.pt")
    ff = models.load_model("ff.pt")                 # a ForceField: ff.predict(batch) / ff.cutoff
    atoms.calc = models.MLFFCalculator(ff)           # ASE calculator (energy, forces, stress)
"""
from models.batch import AtomsBatch
from models.graph import NeighborList, edge_vectors, neighbor_list
from models.interface import ForceField, Prediction
from models.lennard_jones import LennardJones, fit_lennard_jones
from models.base import ForceFieldModel, fit_reference_energies
from models.registry import ARCHITECTURES, build_model, size_hparams
from models.checkpoint import load_ensemble, load_model, save_model
from models.ensemble import Ensemble, ensemble_errors, max_force_deviation
from models.data import read_frames, split_frames
from models.training import TrainConfig, TrainResult, TrainingDiverged, evaluate, fit
from models.calculator import MLFFCalculator
from models.ensemble_training import EnsembleConfig, EnsembleTrainResult, train_ensemble

from models.predictor import Predictor

__all__ = ["AtomsBatch", "NeighborList", "neighbor_list", "edge_vectors", "ForceField", "Prediction", "LennardJones", "fit_lennard_jones", "size_hparams", "load_ensemble",
           "EnsembleConfig", "EnsembleTrainResult", "train_ensemble",
           "ForceFieldModel", "fit_reference_energies", "ARCHITECTURES", "build_model", "load_model", "save_model",
           "Ensemble", "ensemble_errors", "max_force_deviation", "read_frames", "split_frames", "TrainConfig", "TrainResult",
           "TrainingDiverged", "evaluate", "fit", "MLFFCalculator", "Predictor"]
