"""Check: the force fields and the MD engine give the CPU's answers on a CUDA GPU, and what they cost there.

CI has no GPU, so this is the check of the CUDA path, run by hand on a machine with one.  On the library
LGPS cell (50 atoms), four copies rattled by 0.05 Å, float64 throughout:

* every architecture at its default hyper-parameters (seed 0), and the ``--student`` ensemble when given:
  energies [meV/atom] and forces [meV/Å] on CUDA against the CPU (max |difference|), and on CUDA the
  forces against a central finite difference of the energy (h = 1e-4 Å, 6 coordinates);
* the MD engine on CUDA (``md.runner.integrate``): NVE of the four copies, 1 fs, with the student (or
  PaiNN at default hyper-parameters): the total energy's largest excursion per atom over the run;
  and the first 50 steps on CUDA against the same 50 on the CPU, NVE and Langevin (max position
  difference, Å; MD is chaotic, so only the first steps can agree); two Langevin runs on CUDA of the
  same seed (are GPU runs bit-reproducible?);
* the thermostat's counter-based normal deviates (``md.random``) on CUDA against the CPU.

Prints figures; exits 1 if a CUDA answer differs from the CPU's by more than 1e-6 of its scale, or a
force from the energy's finite difference by more than 1e-4 eV/Å, or a thermostat normal by more than
1e-9, so a broken CUDA path is seen.

    .venv/bin/python benchmarks/cuda.py [--student DIR] [--steps 1000] [--json]
"""
from __future__ import annotations

from report import print_result
import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]   # `import md` is the package
sys.path.insert(0, str(_HERE.parent))


def lgps_copies(n: int = 4, rattle_A: float = 0.05):
    """``n`` copies of the library LGPS cell (ase.Atoms), each rattled with its own seed."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from reference.structures import library_structure

    base = AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure)
    out = []
    for k in range(n):
        a = base.copy()
        a.rattle(stdev=rattle_A, seed=k)
        out.append(a)
    return out


def compare(force_field_on, atoms_list) -> dict:
    """CPU vs CUDA energies and forces, and CUDA forces vs a finite difference of the CUDA energy."""
    import numpy as np
    import torch

    from models.batch import AtomsBatch

    batch = AtomsBatch.from_atoms(atoms_list, dtype=torch.float64)
    cpu, gpu = force_field_on("cpu"), force_field_on("cuda")
    p_cpu = cpu.predict(batch)
    p_gpu = gpu.predict(batch.to(device="cuda"))
    n_atoms = len(atoms_list[0])
    e_diff = float((p_gpu.energy.cpu() - p_cpu.energy).abs().max()) / n_atoms
    f_diff = float((p_gpu.forces.cpu() - p_cpu.forces).abs().max())
    f_scale = float(p_cpu.forces.abs().max())
    h, fd_err = 1e-4, 0.0
    rng = np.random.default_rng(0)
    one = AtomsBatch.from_atoms(atoms_list[:1], dtype=torch.float64, device="cuda")
    f_one = gpu.predict(one).forces
    for _ in range(6):
        i, c = int(rng.integers(n_atoms)), int(rng.integers(3))
        e = []
        for sign in (1, -1):
            pos = one.positions.clone()
            pos[i, c] += sign * h
            e.append(float(gpu.predict(one.with_positions(pos)).energy[0]))
        fd = -(e[0] - e[1]) / (2 * h)
        fd_err = max(fd_err, abs(fd - float(f_one[i, c])))
    return {"energy_cpu_vs_cuda_meV_per_atom": e_diff * 1e3, "forces_cpu_vs_cuda_meV_A": f_diff * 1e3,
            "force_scale_eV_A": f_scale, "forces_vs_finite_difference_meV_A": fd_err * 1e3,
            "ok": e_diff <= 1e-6 * max(1.0, float(p_cpu.energy.abs().max()) / n_atoms)
            and f_diff <= 1e-6 * max(1.0, f_scale) and fd_err <= 1e-4}


def md_check(force_field_on, atoms_list, steps: int) -> dict:
    """NVE on CUDA: energy excursion per atom; first 50 steps CUDA vs CPU."""
    import torch

    from md.integrators import maxwell_boltzmann
    from md.runner import integrate
    from md.state import MDState

    def start(device):
        return maxwell_boltzmann(MDState.from_atoms(atoms_list, [600.0] * len(atoms_list),
                                                    list(range(len(atoms_list))), device=device))

    gpu = force_field_on("cuda")
    energies = []
    t0 = time.perf_counter()
    integrate(gpu, start("cuda"), "nve", steps, 1.0,
              callback=lambda s: energies.append((s.potential_energy + s.kinetic_energy()).detach().cpu()))
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    e = torch.stack(energies)                                     # [steps, systems] eV
    excursion = float((e - e[0]).abs().max()) / len(atoms_list[0])
    short = min(50, steps)
    cpu = force_field_on("cpu")
    a = integrate(cpu, start("cpu"), "nve", short, 1.0)
    b = integrate(gpu, start("cuda"), "nve", short, 1.0)
    la = integrate(cpu, start("cpu"), "langevin", short, 1.0)       # the thermostat's noise: same numbers?
    lb = integrate(gpu, start("cuda"), "langevin", short, 1.0)
    repeat = [integrate(gpu, start("cuda"), "langevin", 4 * short, 1.0).positions.cpu() for _ in range(2)]
    return {"nve_steps": steps, "nve_energy_excursion_meV_per_atom": excursion * 1e3,
            "nve_ms_per_step_4_systems": wall / steps * 1e3,
            f"positions_cpu_vs_cuda_after_{short}_steps_A": float((a.positions - b.positions.cpu()).abs().max()),
            f"langevin_positions_cpu_vs_cuda_after_{short}_steps_A":
                float((la.positions - lb.positions.cpu()).abs().max()),
            f"langevin_cuda_run_twice_after_{4 * short}_steps_A": float((repeat[0] - repeat[1]).abs().max())}


def random_check() -> dict:
    """The thermostat's counter-based normals (md.random.atom_normals) on CUDA against the CPU."""
    import torch

    from md.random import atom_normals

    n_sys, n_atoms = 4, 50
    system_index = torch.arange(n_sys).repeat_interleave(n_atoms)
    atom_in_system = torch.arange(n_atoms).repeat(n_sys)
    worst = 0.0
    for step in range(10):
        args = (torch.arange(n_sys) * 7 + 1, torch.full((n_sys,), step), atom_in_system, system_index)
        z_cpu = atom_normals(*args)
        z_gpu = atom_normals(*(a.cuda() for a in args)).cpu()
        worst = max(worst, float((z_cpu - z_gpu).abs().max()))
    return {"thermostat_normals_cpu_vs_cuda_max_abs": worst}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=None, help="folder with an ensemble's member*.pt (optional)")
    p.add_argument("--steps", type=int, default=1000, help="NVE steps on CUDA")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/cuda.py: torch sees no CUDA device here; run it on a machine with a GPU")
        return 0
    import models
    from models import Predictor, load_ensemble

    atoms_list = lgps_copies()
    elements = sorted(set(atoms_list[0].numbers))
    candidates = {}
    for arch in ("schnet", "painn", "dimenetpp", "cgcnn"):
        candidates[arch] = (lambda dev, a=arch: Predictor(models.build_model(a, elements=elements, seed=0),
                                                            device=dev, dtype="float64"))
    if args.student:
        members = sorted(str(m) for m in Path(args.student).glob("member*.pt"))
        if not members:
            print(f"no member*.pt in {args.student}; give the folder of a trained ensemble", file=sys.stderr)
            return 2
        candidates["student"] = lambda dev: Predictor(load_ensemble(members, device=dev), device=dev, dtype="float64")
    result, ok = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}, True
    for name, make in candidates.items():
        r = compare(make, atoms_list)
        ok &= r.pop("ok")
        result.update({f"{name}_{k}": float(f"{v:.3g}") for k, v in r.items()})
    md_ff = candidates.get("student", candidates["painn"])
    result.update({f"md_{k}": float(f"{v:.3g}") for k, v in md_check(md_ff, atoms_list, args.steps).items()})
    result.update(random_check())
    ok &= result["thermostat_normals_cpu_vs_cuda_max_abs"] <= 1e-9
    result["agrees"] = bool(ok)
    print_result(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
