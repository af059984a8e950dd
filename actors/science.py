"""Glue between the Ray actors and the science packages (no Ray here; plain functions on files).

Every function takes plain, serialisable arguments (dicts from the spec, file paths in the data
store) and returns plain JSON-able dicts, so a task can be retried on a restarted actor and a
step's result can be written to the campaign ledger.  Outputs are written atomically to paths
that depend only on the step, so a retried task overwrites its own half-finished work.

The science lives in the packages (``reference`` oracles/structures, ``models`` training and
ensembles, ``md`` trajectories, ``analysis``); where a package does not offer a piece yet, the
small stand-in here uses ASE / pymatgen(-analysis-diffusion) directly.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.atomic import atomic_path, atomic_write_text
from common.errors import InputError

# ----------------------------------------------------------------------------------------------
# candidates
# ----------------------------------------------------------------------------------------------


def candidate_key(formula: str, prototype: str | None) -> str:
    """Stable, file-name-safe key of a candidate, e.g. ``Li10SnP2S12__Li10GeP2S12``."""
    key = f"{formula}__{prototype}" if prototype else formula
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _read_structure(path: str):
    from ase.io import read

    p = Path(path)
    if not p.exists():
        raise InputError(f"candidates.structures: {path} not found; give an existing CIF/POSCAR path")
    return read(p)


def _formula_of(atoms) -> str:
    from pymatgen.core import Composition

    return Composition(atoms.get_chemical_formula()).reduced_formula


def generate_candidates(spec: dict, out_dir: str) -> list[dict]:
    """Candidates for the campaign: ``[{key, formula, prototype, structure_path | None, reason}]``.

    Explicit ``candidates.formulas`` (with ``candidates.structures`` files) come first; otherwise the
    chemical space is enumerated with ``chemspace`` and structures come from ``reference``'s
    prototype substitution.  A formula without a structure is kept with ``structure_path=None`` so
    the campaign records it as ``no_structure``.
    """
    cand_cfg = spec["candidates"]
    out = Path(out_dir)
    formulas = list(cand_cfg["formulas"])
    structures = dict(cand_cfg["structures"])
    if not formulas and structures:
        formulas = list(structures)
    enumerated = not formulas
    if enumerated:  # only compositions that give a structure are kept (at most 30 tries per slot)
        formulas = _enumerate_formulas(spec)[:30 * cand_cfg["max_candidates"]]
    rows: list[dict] = []
    for formula in formulas:
        if len(rows) >= cand_cfg["max_candidates"]:
            break
        if not cand_cfg["include_known"] and not cand_cfg["formulas"] and _is_known(formula):
            continue
        atoms, prototype, why = None, None, ""
        if formula in structures:
            atoms, prototype = _read_structure(structures[formula]), Path(structures[formula]).stem
        else:
            atoms, prototype, why = _structure_from_prototypes(formula, spec)
        if enumerated and atoms is None:
            continue
        key = candidate_key(formula, prototype)
        row = {"key": key, "formula": formula, "prototype": prototype, "structure_path": None, "reason": why}
        if atoms is not None:
            if len(atoms) > cand_cfg["max_atoms"]:
                row["reason"] = f"{len(atoms)} atoms exceed candidates.max_atoms={cand_cfg['max_atoms']}"
            else:
                path = out / key / "structure.extxyz"
                _write_frames(path, [atoms])
                row["structure_path"] = str(path)
        elif not why:
            row["reason"] = "no prototype gives a structure for this composition"
        rows.append(row)
    return rows


def _enumerate_formulas(spec: dict) -> list[str]:
    """Allowed compositions of ``space`` (``chemspace``) whose anonymous formula fits a prototype."""
    from pymatgen.core import Composition

    space = spec["space"]
    try:
        from chemspace import enumerate_compositions
    except ImportError:
        raise InputError("candidates.formulas is empty and chemspace enumeration is not available; "
                         "list the formulas to screen under candidates.formulas") from None
    table = enumerate_compositions(space["elements"], arity=list(range(space["arity_min"], space["arity_max"] + 1)),
                                   must_contain=space["require"] or None, max_stoich=space["max_stoichiometry"],
                                   include_disallowed=not (space["charge_neutral"] or space["electronegativity"]))
    formulas = sorted(set(table.column("formula").to_pylist()))
    shapes = set()
    for proto in spec["prototypes"]:
        try:
            from reference.candidates import prototype_structure

            shapes.add(prototype_structure(proto)[1].composition.anonymized_formula)
        except (ImportError, ValueError):
            continue
    if shapes:
        formulas = [f for f in formulas if Composition(f).anonymized_formula in shapes]
    return formulas


def _structure_from_prototypes(formula: str, spec: dict):
    """(ase.Atoms | None, prototype name | None, reason) using ``reference`` when it offers it."""
    try:
        ref = importlib.import_module("reference")
        make = getattr(ref, "candidate_structure")
    except (ImportError, AttributeError):
        return None, None, "no structure source: reference.candidate_structure not available"
    for proto in spec["prototypes"]:
        try:
            atoms = make(formula, proto)
        except (ValueError, KeyError) as exc:  # InputError is a ValueError
            last = str(exc)
            continue
        if atoms is not None:
            if hasattr(atoms, "to_ase_atoms") or not hasattr(atoms, "get_positions"):
                from pymatgen.io.ase import AseAtomsAdaptor

                atoms = AseAtomsAdaptor.get_atoms(atoms)
            return atoms, proto, ""
    return None, None, f"no prototype of {spec['prototypes']} fits {formula}"


# ----------------------------------------------------------------------------------------------
# frames on disk (extended XYZ keeps energy, forces, stress and info keys)
# ----------------------------------------------------------------------------------------------


def _write_frames(path: str | Path, frames: Sequence) -> str:
    from ase.io import write

    with atomic_path(path) as tmp:
        write(tmp, list(frames), format="extxyz")
    return str(path)


def read_frames(path: str | Path) -> list:
    from ase.io import read

    return list(read(path, ":", format="extxyz"))


# ----------------------------------------------------------------------------------------------
# oracles
# ----------------------------------------------------------------------------------------------


def make_oracle(oracle: dict):
    """An ASE calculator for the spec's ``oracle`` section, and its provenance name."""
    name = oracle["name"]
    try:
        ref = importlib.import_module("reference")
        maker = getattr(ref, "make_oracle")
        return maker(name, version=oracle.get("version"), device=oracle.get("device", "cpu"))
    except (ImportError, AttributeError, TypeError):
        pass
    if ":" in name:
        module, _, attr = name.rpartition(":")
        try:
            if module.endswith(".py"):  # a user's file: 'my_dft.py:make_calculator'

                spec = importlib.util.spec_from_file_location(Path(module).stem, module)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            else:
                mod = importlib.import_module(module)
            factory = getattr(mod, attr)
        except (ImportError, AttributeError, FileNotFoundError):
            raise InputError(f"oracle.name: cannot import {name!r}; give chgnet, lj, emt, 'module:factory' "
                             "or 'file.py:factory'") from None
        return factory(), f"{Path(module).stem}:{attr}"
    if name == "chgnet":
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        version = oracle.get("version") or "0.3.0"
        model = CHGNet.load(model_name=version, use_device=oracle.get("device", "cpu"), verbose=False)
        return CHGNetCalculator(model=model, use_device=oracle.get("device", "cpu")), f"chgnet-{version}"
    if name == "lj":
        from ase.calculators.lj import LennardJones

        return LennardJones(epsilon=0.0104, sigma=3.40, rc=8.5, smooth=True), "lj-argon"
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT(), "emt"
    raise InputError(f"oracle.name: unknown oracle {name!r}; use chgnet, lj, emt or 'module:factory'")


def label_frames(frames: list, oracle: dict, source: str, temperature_K: float | None = None,
                 run_id: str | None = None) -> tuple[list, int, list[str]]:
    """Label ``frames`` with the oracle: (labelled frames, number failed, failure messages).

    A frame fails when the calculator raises or returns non-finite energy/forces; failures are
    counted, never fatal.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    calc, oracle_name = make_oracle(oracle)
    good, errors = [], []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        try:
            energy = float(atoms.get_potential_energy())
            forces = np.asarray(atoms.get_forces(), dtype=float)
            if not (math.isfinite(energy) and np.isfinite(forces).all()):
                raise FloatingPointError("non-finite energy or forces")
        except Exception as exc:  # noqa: BLE001 - any oracle failure is a recorded failure
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
        out.info.update(oracle=oracle_name, source=source)
        if temperature_K is not None:
            out.info["temperature_K"] = float(temperature_K)
        if run_id:
            out.info["run_id"] = run_id
        good.append(out)
    return good, len(errors), errors


# ----------------------------------------------------------------------------------------------
# MD (reference with the oracle, exploration/production with the student ensemble)
# ----------------------------------------------------------------------------------------------


def _langevin(atoms, calc, temperature_K: float, steps: int, timestep_fs: float, save_every: int,
              seed: int, path: str, metadata: dict, fusion_distance_A: float = 0.0,
              max_temperature_K: float = math.inf) -> dict:
    """Langevin NVT with ASE (stand-in until ``md``'s batched runner is wired); writes an HDF5 trajectory.

    Stops early on fusion (pair closer than ``fusion_distance_A``) or a kinetic temperature above
    ``max_temperature_K``.  Returns per-frame force deviations when the calculator reports them.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from md.trajectory import TrajectoryWriter

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K, friction=0.02,
                   rng=np.random.default_rng(seed + 1), fixcm=False)
    force_std: list[float] = []
    status = {"exploded": False, "fusion": False, "min_distance_A": math.inf, "failed_step": None}
    writer = TrajectoryWriter(path, atoms.get_atomic_numbers(), timestep_fs=timestep_fs, stride=save_every,
                              temperature_K=temperature_K, metadata=metadata, forces=True)

    def frame(step: int) -> bool:
        e_pot = float(atoms.get_potential_energy())
        e_kin = float(atoms.get_kinetic_energy())
        t_now = float(atoms.get_temperature())
        forces = atoms.get_forces()
        writer.append(step=step, positions=atoms.get_positions(wrap=True), unwrapped_positions=atoms.get_positions(),
                      cell=np.asarray(atoms.cell[:]), potential_energy=e_pot, kinetic_energy=e_kin,
                      temperature_K=t_now, forces=forces)
        std = calc.results.get("force_std")
        if std is not None:
            force_std.append(float(np.max(std)))
        dmin = _min_distance(atoms)
        status["min_distance_A"] = min(status["min_distance_A"], dmin)
        bad = (not math.isfinite(e_pot)) or (not np.isfinite(forces).all()) or t_now > max_temperature_K
        if dmin < fusion_distance_A:
            status["fusion"] = True
        if bad:
            status["exploded"] = True
        if status["fusion"] or status["exploded"]:
            status["failed_step"] = step
            return False
        return True

    done = 0
    try:
        ok = frame(0)
        while ok and done < steps:
            n = min(save_every, steps - done)
            dyn.run(n)
            done += n
            ok = frame(done)
    except Exception as exc:  # noqa: BLE001 - a blow-up inside the force field is an explosion
        status["exploded"] = True
        status["failed_step"] = done
        status["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
    status.update(path=str(path), steps=done, simulated_ps=done * timestep_fs / 1000.0, force_std_max=force_std)
    if not math.isfinite(status["min_distance_A"]):
        status["min_distance_A"] = None
    return status


def _min_distance(atoms) -> float:
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, 4.0)
    return float(d.min()) if len(d) else math.inf


def reference_md(structure_path: str, oracle: dict, temperature_K: float, steps: int, timestep_fs: float,
                 save_every: int, seed: int, out_path: str) -> dict:
    """Short oracle MD at one temperature; every stored frame keeps its oracle forces (labels)."""
    atoms = read_frames(structure_path)[0]
    calc, oracle_name = make_oracle(oracle)
    status = _langevin(atoms, calc, temperature_K, steps, timestep_fs, save_every, seed, out_path,
                       {"kind": "oracle-reference", "oracle": oracle_name})
    status["oracle"] = oracle_name
    return status


def trajectory_frames(path: str, labelled: bool = False, oracle: str | None = None, source: str = "oracle-md") -> list:
    """Frames of a trajectory file as ase.Atoms (with SinglePointCalculator labels if ``labelled``)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from md.trajectory import TrajectoryReader

    out = []
    with TrajectoryReader(path) as tr:
        numbers = tr.numbers
        pos, cell = tr.read("positions"), tr.read("cell")
        energy = tr.read("potential_energy")
        steps = tr.read("step")
        forces = tr.read("forces") if labelled else None
        for k in range(len(pos)):
            a = Atoms(numbers=numbers, positions=pos[k], cell=cell[k], pbc=True, info={"step": int(steps[k])})
            if labelled:
                a.calc = SinglePointCalculator(a, energy=float(energy[k]), forces=forces[k])
                a.info.update(oracle=oracle or "unknown", source=source, temperature_K=float(tr.temperature_K or 0))
            out.append(a)
    return out


# ----------------------------------------------------------------------------------------------
# students: training and ensembles
# ----------------------------------------------------------------------------------------------


def train_ensemble(label_paths: list[str], models: dict, training: dict, init: list[str] | None,
                   out_dir: str, seed: int) -> dict:
    """Train (or fine-tune ``init``) an ensemble on the labelled frames; returns checkpoint paths and scores.

    ``label_paths``: extxyz files, and/or store selections ``{"store": root, "shards": [[name, [i...]], ...]}``
    (see :class:`StoreIndex`).
    """
    frames = []
    for p in label_paths:
        frames += selection_frames(p["store"], p) if isinstance(p, dict) else read_frames(p)
    if not frames:
        raise ValueError("no labelled frames to train on")
    out = Path(out_dir)
    archs = models["architectures"]
    paths, scores = [], []
    for m in range(models["ensemble_size"]):
        arch = archs[m % len(archs)]
        path = out / f"member{m}.{ 'json' if arch == 'lj' else 'pt'}"
        start = init[m] if init and m < len(init) else None
        if arch == "lj":
            score = _fit_lj(frames, path, seed + m, start)
        else:
            score = _train_gnn(frames, arch, models, training, start, path, seed + m)
        paths.append(str(path))
        scores.append(score)
    return {"members": paths, "n_frames": len(frames), "force_mae_meV_A": float(np.mean(scores)) * 1000.0}


_HPARAMS = {  # spec's generic sizes -> each architecture's own hyper-parameter names
    "schnet": lambda h, n: dict(hidden_channels=h, num_filters=h, num_interactions=n),
    "painn": lambda h, n: dict(hidden_channels=h, num_layers=n),
    "dimenetpp": lambda h, n: dict(hidden_channels=h, num_blocks=n),
    "cgcnn": lambda h, n: dict(hidden_channels=h, num_layers=n),
}


def _train_gnn(frames, arch, models_cfg, training, start, path, seed) -> float:
    """Train one member with ``models.fit`` (fine-tuning ``start`` when given); returns val force MAE (eV/Å)."""
    import models

    elements = sorted({int(z) for a in frames for z in a.numbers})
    if start:
        model = models.load_model(start)
    else:
        hp = _HPARAMS.get(arch, lambda h, n: {})(models_cfg["hidden"], models_cfg["layers"])
        try:
            model = models.build_model(arch, elements, seed=seed, cutoff=models_cfg["cutoff_A"], **hp)
        except InputError:
            model = models.build_model(arch, elements, seed=seed, cutoff=models_cfg["cutoff_A"])
    config = models.TrainConfig(
        epochs=training["fine_tune_epochs"] if start else training["epochs"], batch_size=training["batch_size"],
        lr=training["learning_rate"], energy_weight=training["energy_weight"], force_weight=training["force_weight"],
        max_time_s=training["max_minutes"] * 60.0, val_fraction=training["validation_fraction"], seed=seed)
    result = models.fit(model, list(frames), config=config, fine_tune=bool(start))
    models.save_model(result.model, path)
    return float(result.val_metrics.get("force_mae_meV_A", float("nan"))) / 1000.0


def _fit_lj(frames, path: Path, seed: int, start: str | None) -> float:
    """Analytic stand-in student: Lennard-Jones (epsilon eV, sigma Å) fitted to a bootstrap of the forces."""
    import torch
    from scipy.optimize import least_squares

    from models import AtomsBatch, LennardJones

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(frames), size=len(frames), replace=True)
    sample = [frames[i] for i in pick]
    batch = AtomsBatch.from_atoms(sample, dtype=torch.float64)
    target = np.concatenate([f.get_forces() for f in sample])
    x0 = [0.0104, 3.40]
    if start:
        prev = json.loads(Path(start).read_text())
        x0 = [prev["epsilon"], prev["sigma"]]
    else:
        x0 = [x0[0] * rng.uniform(0.5, 1.5), x0[1] * rng.uniform(0.95, 1.05)]

    def residual(p):
        ff = LennardJones(epsilon=p[0], sigma=p[1], cutoff=8.5)
        return (ff.predict(batch).forces.numpy() - target).ravel()

    fit = least_squares(residual, x0, bounds=([1e-5, 1.0], [1.0, 6.0]), max_nfev=30)
    mae = float(np.abs(fit.fun).mean())
    atomic_write_text(path, json.dumps({"arch": "lj", "epsilon": float(fit.x[0]), "sigma": float(fit.x[1]),
                                        "cutoff": 8.5, "force_mae_eV_A": mae}))
    return mae


class LJEnsemble:
    """Mean of several force fields; ``force_std`` per atom = sqrt(mean_m |F_m - <F>|^2) (eV/Å)."""

    def __init__(self, members: list):
        self.members = members
        self.cutoff = max(m.cutoff for m in members)

    def predict(self, batch, neighbors=None, compute_stress: bool = False):
        import torch

        from models.interface import Prediction

        preds = [m.predict(batch, neighbors, compute_stress) for m in self.members]
        forces = torch.stack([p.forces for p in preds])
        mean_f = forces.mean(0)
        std = ((forces - mean_f) ** 2).sum(-1).mean(0).sqrt() if len(preds) > 1 else None
        stress = torch.stack([p.stress for p in preds]).mean(0) if compute_stress else None
        return Prediction(energy=torch.stack([p.energy for p in preds]).mean(0), forces=mean_f,
                          stress=stress, force_std=std)


def load_ensemble(member_paths: list[str]):
    """An ensemble ForceField from member files (``.pt`` checkpoints via ``models``; ``.json`` analytic LJ)."""
    if all(not p.endswith(".json") for p in member_paths):
        import models

        return models.Ensemble([models.load_model(p) for p in member_paths]).eval()
    members = []
    for p in member_paths:
        if p.endswith(".json"):
            from models import LennardJones

            d = json.loads(Path(p).read_text())
            members.append(LennardJones(epsilon=d["epsilon"], sigma=d["sigma"], cutoff=d["cutoff"]))
        else:
            mod = importlib.import_module("models")
            members.append(getattr(mod, "load_model")(p))
    return LJEnsemble(members)


class ForceFieldCalculator:
    """Minimal ASE calculator over a ForceField (stand-in for ``models``' calculator); float64."""

    implemented_properties = ("energy", "forces")

    def __new__(cls, ff):
        from ase.calculators.calculator import Calculator, all_changes

        class _Calc(Calculator):
            implemented_properties = ["energy", "forces", "free_energy"]

            def __init__(self, ff):
                super().__init__()
                self.ff = ff

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                import torch

                from models import AtomsBatch

                super().calculate(atoms, properties, system_changes)
                batch = AtomsBatch.from_atoms(self.atoms, dtype=torch.float64)
                pred = self.ff.predict(batch)
                e = float(pred.energy[0])
                self.results = {"energy": e, "free_energy": e, "forces": pred.forces.numpy().astype(float)}
                if pred.force_std is not None:
                    self.results["force_std"] = pred.force_std.numpy().astype(float)

        return _Calc(ff)


def student_md(member_paths: list[str], structure_path: str, temperature_K: float, steps: int,
               timestep_fs: float, save_every: int, seed: int, out_path: str, stability: dict,
               start_frame: str | None = None) -> dict:
    """MLFF MD with the ensemble; per stored frame the max atomic force deviation (eV/Å)."""
    ff = load_ensemble(member_paths)
    atoms = read_frames(start_frame or structure_path)[-1]
    if isinstance(ff, LJEnsemble):
        calc = ForceFieldCalculator(ff)
    else:
        import models

        calc = models.MLFFCalculator(ff)
    status = _langevin(atoms, calc, temperature_K, steps, timestep_fs, save_every, seed,
                       out_path, {"kind": "mlff", "members": member_paths},
                       fusion_distance_A=stability["fusion_distance_A"],
                       max_temperature_K=stability["max_temperature_factor"] * temperature_K)
    status["temperature_K"] = temperature_K
    return status


def force_errors(member_paths: list[str], label_path: str) -> dict:
    """Force MAE (meV/Å) of the ensemble mean on labelled frames (the new labels of a round)."""
    import torch

    from models import AtomsBatch

    frames = read_frames(label_path)
    if not frames:
        return {"force_mae_meV_A": None}
    ff = load_ensemble(member_paths)
    dtype = torch.float64 if isinstance(ff, LJEnsemble) else ff.models[0].param_dtype
    pred = ff.predict(AtomsBatch.from_atoms(frames, dtype=dtype)).forces.detach().double().numpy()
    ref = np.concatenate([f.get_forces() for f in frames])
    return {"force_mae_meV_A": float(np.abs(pred - ref).mean() * 1000.0)}


# ----------------------------------------------------------------------------------------------
# judging: RDF, verdicts, frame selection
# ----------------------------------------------------------------------------------------------


def rdf(path: str, skip: int = 0, r_max_A: float = 6.0):
    """Partial and total g(r) of a trajectory file (``analysis.rdf``), skipping the first frames."""
    from analysis.rdf import rdf as analysis_rdf

    from md.trajectory import TrajectoryReader

    with TrajectoryReader(path) as tr:
        numbers = tr.numbers
        pos, cell = tr.read("positions"), tr.read("cell")
    start = min(skip, max(len(pos) - 1, 0))
    return analysis_rdf(pos[start:], cell[start:], numbers, r_max_A=r_max_A, n_bins=60)


def judge(explore: dict, reference: dict, stability: dict, al: dict) -> dict:
    """Verdict on one exploration run: status, RDF MAE, trust-band fractions, frames to label."""
    dev = np.asarray(explore.get("force_std_max") or [], dtype=float)
    lo, hi = stability["trust_lo_eV_A"], stability["trust_hi_eV_A"]
    n = max(len(dev), 1)
    accurate = float((dev < lo).sum() / n) if len(dev) else 0.0
    selected_mask = (dev >= lo) & (dev < hi)
    failed = float((dev >= hi).sum() / n) if len(dev) else 1.0
    from analysis.rdf import rdf_mae as analysis_rdf_mae

    reference_path = reference["path"]
    rdf_mae = analysis_rdf_mae(rdf(explore["path"], skip=2), rdf(reference_path, skip=2))
    if explore.get("fusion"):
        status = "fusion"
    elif explore.get("exploded"):
        status = "exploded"
    elif rdf_mae > stability["rdf_mae"]:
        status = "rdf_mismatch"
    elif accurate < stability["accurate_fraction"]:
        status = "uncertain"
    else:
        status = "reliable"
    # frames inside the trust band; if an explosion left none, take the last frames before it
    candidates = list(np.flatnonzero(selected_mask))
    if not candidates and status != "reliable":
        candidates = list(np.flatnonzero(dev >= lo))[:al["labels_per_round"]] or list(range(max(0, len(dev) - 3), len(dev)))
    # geometry filter: no pair closer than 80 % of the closest pair seen in the oracle reference run
    closest = max(stability["fusion_distance_A"], 0.8 * (reference.get("min_distance_A") or 0.0))
    picked = _diverse(explore["path"], candidates, al["labels_per_round"], al["min_frame_distance_A"], closest)
    return {"status": status, "rdf_mae": rdf_mae, "accurate_fraction": accurate,
            "selected_fraction": float(selected_mask.sum() / n), "failed_fraction": failed,
            "frames": [int(i) for i in picked], "min_distance_A": explore.get("min_distance_A"),
            "failed_step": explore.get("failed_step")}


def _diverse(path: str, indices: list[int], n_max: int, min_rmsd_A: float, fusion_A: float) -> list[int]:
    """Greedy farthest-first pick of geometry-sane frames at least ``min_rmsd_A`` apart."""
    if not indices:
        return []
    frames = trajectory_frames(path)
    ok = [i for i in indices if i < len(frames) and _min_distance(frames[i]) >= fusion_A]
    picked: list[int] = []
    for i in ok:
        if len(picked) >= n_max:
            break
        x = frames[i].get_positions()
        if all(np.sqrt(((x - frames[j].get_positions()) ** 2).sum(1).mean()) >= min_rmsd_A for j in picked):
            picked.append(i)
    return picked


def frames_at(path: str, indices: list[int]) -> list:
    frames = trajectory_frames(path)
    return [frames[i] for i in indices]


# ----------------------------------------------------------------------------------------------
# transport
# ----------------------------------------------------------------------------------------------


def transport(runs: list[dict], structure_path: str, equilibration_steps: int, specie: str = "Li") -> dict:
    """D(T) (cm²/s), sigma(T) (mS/cm), Ea (eV), log10 sigma(300 K) with errors (``analysis``).

    Each run's unwrapped trajectory after ``equilibration_steps`` gives one diffusion result;
    replicas are combined per temperature, sigma by Nernst-Einstein, Ea by a weighted Arrhenius fit.
    """
    from analysis.diffusion import diffusion
    from analysis.transport import transport as analysis_transport

    from md.trajectory import TrajectoryReader

    results, n_ions, volume, dropped = [], 0, 0.0, []
    for run in runs:
        with TrajectoryReader(run["path"]) as tr:
            skip = max(equilibration_steps // int(tr.stride), 0)
            numbers, unwrapped, cells = tr.numbers, tr.read("unwrapped_positions")[skip:], tr.read("cell")
            dt_fs = float(tr.dt_fs)
        if len(unwrapped) < 20:
            continue
        result = diffusion(unwrapped, numbers, dt_fs, species=specie, temperature_K=float(run["temperature_K"]))
        if not (math.isfinite(result.diffusivity_cm2_s) and math.isfinite(result.diffusivity_err_cm2_s)):
            dropped.append(float(run["temperature_K"]))
            continue
        results.append(result)
        n_ions = int((numbers == _atomic_number(specie)).sum())
        volume = float(abs(np.linalg.det(cells[0])))
    if not results:
        return {"note": "production runs too short for a diffusion fit (need >= 20 stored frames)"}
    res = analysis_transport(results, n_ions, volume, species=specie)
    out: dict[str, Any] = {
        "temperatures_K": [p.temperature_K for p in res.points],
        "diffusivity_cm2_s": [p.diffusivity_cm2_s for p in res.points],
        "diffusivity_cm2_s_err": [p.diffusivity_err_cm2_s for p in res.points],
        "conductivity_mS_cm": [p.conductivity_mS_cm for p in res.points],
        "conductivity_mS_cm_err": [p.conductivity_err_mS_cm for p in res.points],
        "notes": list(res.notes) + ([f"no finite diffusion fit at {dropped} K (dropped)"] if dropped else []),
    }
    if res.arrhenius is not None:
        a = res.arrhenius
        out.update(activation_energy_eV=a.activation_energy_eV, activation_energy_eV_err=a.activation_energy_err_eV,
                   log10_sigma_300K=a.log10_sigma300_mS_cm, log10_sigma_300K_err=a.log10_sigma300_err)
    return out


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


def student_md_batched(member_paths: list[str], structure_path: str, temperatures_K: list[float], replicas: int,
                       steps: int, md: dict, stability: dict, seed: int, out_dir: str,
                       with_deviation: bool = False) -> list[dict]:
    """MLFF MD of one structure at every temperature x replica as ONE batch (``md.runner.BatchedMD``).

    Resumes from the run directory's checkpoint when a retried task finds one.  With
    ``with_deviation`` the ensemble's max atomic force deviation (eV/Å) of every stored frame is
    evaluated afterwards (the active-learning criterion).  Returns one dict per system.
    """
    import torch

    from md.monitors import MonitorConfig
    from md.protocol import Protocol
    from md.runner import BatchedMD, SystemSpec

    ff = load_ensemble(member_paths)
    atoms = read_frames(structure_path)[-1]
    systems = [SystemSpec(name=f"T{t:g}K_r{k}", atoms=atoms, temperature_K=float(t), seed=seed + 7919 * k + int(t))
               for t in temperatures_K for k in range(replicas)]
    thermostat = {"langevin": "langevin", "nose-hoover": "nose-hoover", "berendsen": "langevin"}[md["thermostat"]]
    protocol = Protocol.nvt(timestep_fs=md["timestep_fs"], total_fs=steps * md["timestep_fs"], stride=md["save_every"],
                            thermostat=thermostat, checkpoint_every=max(md["save_every"], 50))
    fusion_fraction = 0.5 if stability["fusion_distance_A"] <= 0.7 else min(0.9, stability["fusion_distance_A"] / 1.4)
    monitor = MonitorConfig(fusion_fraction=fusion_fraction, max_temperature_factor=stability["max_temperature_factor"],
                            min_runaway_K=0.0, check_every=max(1, min(10, md["save_every"])))
    runner = BatchedMD(ff, systems, protocol, out_dir, monitor=monitor, device="cuda" if torch.cuda.is_available() else "cpu",
                       metadata={"kind": "mlff", "members": member_paths})
    out = []
    for res in runner.run(n_steps=steps):
        failed = res.verdict != "stable"
        row = {"path": res.trajectory, "temperature_K": res.temperature_K, "verdict": res.verdict,
               "exploded": res.verdict in ("exploded", "framework_drift"), "fusion": res.verdict == "atom_fusion",
               "failed_step": res.failure_step if failed else None, "steps": res.steps_done,
               "simulated_ps": res.steps_done * md["timestep_fs"] / 1000.0, "evidence": _jsonable(res.evidence)}
        if with_deviation and Path(res.trajectory).exists():
            row["force_std_max"], row["min_distance_A"] = _frame_deviations(ff, res.trajectory)
        out.append(row)
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _frame_deviations(ff, path: str) -> tuple[list[float], float | None]:
    """Per stored frame: max atomic ensemble force deviation (eV/Å); and the closest pair seen (Å)."""
    import torch

    from models import AtomsBatch

    frames = trajectory_frames(path)
    if not frames:
        return [], None
    dtype = torch.float64 if isinstance(ff, LJEnsemble) else ff.models[0].param_dtype
    devs = []
    for i in range(0, len(frames), 16):
        chunk = frames[i:i + 16]
        batch = AtomsBatch.from_atoms(chunk, dtype=dtype)
        pred = ff.predict(batch)
        std = pred.force_std if pred.force_std is not None else torch.zeros(batch.n_atoms)
        per = torch.zeros(batch.n_systems, dtype=std.dtype).scatter_reduce(0, batch.system_index, std.detach(), "amax")
        devs += [float(x) for x in per]
    dmin = min(_min_distance(a) for a in frames)
    return devs, (dmin if math.isfinite(dmin) else None)


# ----------------------------------------------------------------------------------------------
# the labelled data store (reference.store.LabelStore layout: <root>/shards/*.extxyz)
# ----------------------------------------------------------------------------------------------


def store_shard_path(store_root: str, campaign: str, step_key: str, n: int) -> str:
    """Deterministic shard of one label step: ``<store>/shards/campaign-<campaign>-<step key>-r<n>.extxyz``.

    A step re-run after a crash (labels appended, ledger not yet updated) rewrites the SAME file with
    the same frames, so the store never holds a step's labels twice.
    """
    from reference.store import LabelStore

    name = re.sub(r"[^A-Za-z0-9._@-]", "_", f"campaign-{campaign}-{step_key}-r{n}") + ".extxyz"
    return str(LabelStore(store_root).shards_dir / name)


def append_labels(path: str, frames: Sequence, run_id: str) -> str:
    """Write labelled frames (checked with ``reference.store.validate_frame``) as the store shard ``path``.

    Every frame carries oracle, source, temperature_K and run_id; written to a hidden temporary file and
    renamed (the store's readers ignore the temporary).
    """
    from reference.store import validate_frame

    frames = list(frames)
    for i, atoms in enumerate(frames):
        atoms.info["run_id"] = run_id
        atoms.info.pop("step", None)
        validate_frame(atoms, where=f"label frame {i} of {run_id}")
    return _write_frames(path, frames)


class StoreIndex:
    """Read-only view of a LabelStore's shards for training-set selection (shards cached by name+size).

    Each frame is addressed by (shard file name, index in the shard); shards are append-only and never
    modified, so a recorded selection names exactly the same frames later.
    """

    def __init__(self, root: str):
        from reference.store import LabelStore

        self.store = LabelStore(root)
        self._cache: dict[str, tuple[tuple, list[tuple[frozenset, str | None]]]] = {}

    def _summary(self, path: Path) -> list[tuple[frozenset, str | None]]:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._cache.get(path.name)
        if hit is None or hit[0] != stamp:
            frames = read_frames(path)
            hit = (stamp, [(frozenset(a.get_chemical_symbols()), a.info.get("oracle")) for a in frames])
            self._cache[path.name] = hit
        return hit[1]

    def select(self, elements: set[str], min_shared: int, oracle: str) -> dict:
        """Frames of ``oracle`` sharing at least ``min_shared`` elements with ``elements``.

        Returns ``{"shards": [[name, [indices]], ...], "n_frames", "fingerprint"}`` (the fingerprint is a
        hash of the selected frame addresses: it changes exactly when the selection does).
        """
        chosen = []
        for path in self.store.shards():
            idx = [i for i, (els, orc) in enumerate(self._summary(path))
                   if orc == oracle and len(els & elements) >= min_shared]
            if idx:
                chosen.append([path.name, idx])
        return selection(chosen, oracle)


def selection(chosen: list, oracle: str) -> dict:
    """A training selection ``{"shards": [[name, [indices]], ...], n_frames, oracle, fingerprint}``."""
    import hashlib

    chosen = [[name, list(idx)] for name, idx in chosen if idx]
    text = json.dumps([oracle, chosen], sort_keys=True)
    return {"shards": chosen, "n_frames": sum(len(i) for _, i in chosen), "oracle": oracle,
            "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16]}


def selection_frames(store_root: str, selection: dict) -> list:
    """The frames a recorded selection names, read from the store's shards (energies of one oracle)."""
    from reference.store import LabelStore

    shards = LabelStore(store_root).shards_dir
    out = []
    for name, idx in selection["shards"]:
        frames = read_frames(shards / name)
        out += [frames[i] for i in idx]
    return out
