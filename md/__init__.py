"""Batched molecular dynamics with any :class:`models.interface.ForceField`.

Modules: ``state`` (MDState), ``integrators`` (stateless NVE/Langevin/Nose-Hoover/ramp),
``random`` (counter-based per-system streams), ``neighbors`` (Verlet list with skin),
``monitors`` (live stability checks), ``protocol`` (the study's MD protocol), ``runner``
(many systems, one force-field call per step, checkpoint/resume), ``trajectory`` (HDF5 files).

Units: Å, fs, eV, K, amu; velocities in Å/fs.  Imports stay lazy so that ``ase.io`` can load
the trajectory plugin without pulling in torch.
"""
