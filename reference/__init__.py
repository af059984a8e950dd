"""Reference data: structures, oracles (ASE calculators), reference MD, AIMD import, data store, candidates.

Never imports ray or mlflow.  Heavy dependencies load lazily: ``import reference`` is cheap.
Main entry points::

    reference.structures.library_structure("Li10GeP2S12")     ordered library structure + provenance
    reference.oracles.Oracle("chgnet").label(atoms)           a labelled frame
    reference.store.LabelStore(path).query(shares_with="Li10SiP2S12", min_shared=3)
    reference.candidates.propose(["Li10SiP2S12"])             Candidate records
"""
from __future__ import annotations


def make_oracle(name: str = "chgnet", version: str | None = None, device: str = "cpu", **kwargs):
    """(ASE calculator, oracle label) — see :func:`reference.oracles.make_oracle`."""
    from reference.oracles import make_oracle as _make

    return _make(name, version=version, device=device, **kwargs)


def candidate_structure(formula: str, prototype: str):
    """One substituted pymatgen Structure of ``formula`` in ``prototype`` (library name or file).

    Raises InputError (a ValueError) with the reason when the prototype does not fit.
    """
    from reference.candidates import candidate_structure as _cs

    return _cs(formula, prototype)


def library_structure(name: str):
    """The ordered pymatgen Structure of library entry ``name`` (e.g. ``Li10GeP2S12``).

    ``reference.structures.library_structure`` gives the full record (provenance, ordering choices).
    """
    from reference.structures import library_structure as _ls

    return _ls(name).structure


__all__ = ["make_oracle", "candidate_structure", "library_structure"]
