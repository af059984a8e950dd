"""Trajectory analysis: RDFs, stability verdicts, diffusion (MSD, D), conductivity, Arrhenius, plots.

Depends on nothing of ours but ``common``.  Functions return dataclasses and never print.
Units in names: Å, fs, ps, K, eV, cm^2/s, mS/cm.
"""
