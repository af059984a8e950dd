"""Reference calculators ("oracles") behind one interface built on ASE calculators.

Built in: ``chgnet`` (default; weights ship inside the chgnet package), ``sevennet`` (SevenNet-0,
when sevenn is installed), ``tblite`` (GFN1-xTB, when tblite is installed), ``emt`` and ``lj``
(toy calculators for tests).  Any ASE calculator for production DFT by configuration:
``module:ClassOrFactory`` or ``file.py:factory`` plus keyword arguments.

Every label records the oracle that made it (``atoms.info['oracle']`` = name + version).  A failure
on one frame (exception, SCF not converged, non-finite energy/forces) is retried, then recorded in
``LabelReport.failures`` and skipped; the other frames are still labelled.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import check_fields, param
from common import progress
from common.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_ORACLE = "chgnet"


@dataclass(frozen=True)
class OracleConfig:
    """Which oracle labels frames and runs reference MD (:class:`Oracle` keywords)."""
    name: str = param(DEFAULT_ORACLE, "reference calculator: chgnet, lj, emt, sevennet, tblite, or an importable "
                      "'module:factory'")
    version: str | None = param(None, "oracle model version (chgnet: 0.3.0 default)")
    device: str = param("cpu", "device for the oracle (cpu or cuda)")

    def __post_init__(self):
        check_fields(self)

    def make(self) -> "Oracle":
        return Oracle(self.name, version=self.version, device=self.device)


class OracleError(RuntimeError):
    """One frame could not be labelled (calculator error, SCF not converged, non-finite result)."""


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


def available_oracles() -> dict[str, bool]:
    """Built-in oracle names -> whether they can run here (package installed)."""
    have = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    return {"chgnet": have("chgnet"), "sevennet": have("sevenn"), "tblite": have("tblite"),
            "emt": True, "lj": True}


def _chgnet(version=None, device="cpu", **kw):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    class CHGNetOracleCalculator(CHGNetCalculator):
        """CHGNetCalculator that computes stress only when asked (MD needs energy + forces only)."""

        def calculate(self, atoms=None, properties=None, system_changes=None, task=None):
            from ase.calculators.calculator import all_changes

            props = properties or ["energy", "forces", "stress"]
            task = task or ("efs" if "stress" in props else "ef")
            super().calculate(atoms=atoms, properties=props, system_changes=system_changes or all_changes, task=task)

    version = version or "0.3.0"
    # chgnet prints its banners to stdout; they would corrupt a command's --json output
    with contextlib.redirect_stdout(sys.stderr):
        model = CHGNet.load(model_name=version, use_device=device, verbose=False)
        return CHGNetOracleCalculator(model=model, use_device=device, **kw), f"chgnet-{version}"


def _sevennet(version=None, device="cpu", **kw):
    from sevenn.calculator import SevenNetCalculator

    model = version or "7net-0"
    return SevenNetCalculator(model=model, device=device, **kw), f"sevennet-{model}-{_version('sevenn')}"


def _tblite(version=None, device="cpu", **kw):
    from tblite.ase import TBLite

    method = version or "GFN1-xTB"
    kw.setdefault("verbosity", 0)
    return TBLite(method=method, **kw), f"tblite-{method}-{_version('tblite')}"


def _emt(version=None, device="cpu", **kw):
    from ase.calculators.emt import EMT

    return EMT(**kw), f"emt-ase-{_version('ase')}"


def _lj(version=None, device="cpu", **kw):
    from ase.calculators.lj import LennardJones

    params = dict(epsilon=0.0104, sigma=3.40, rc=8.5, smooth=True)
    params.update(kw)
    return LennardJones(**params), "lj-argon"


BUILTIN = {"chgnet": _chgnet, "sevennet": _sevennet, "tblite": _tblite, "emt": _emt, "lj": _lj}
_PACKAGE = {"chgnet": "chgnet", "sevennet": "sevenn", "tblite": "tblite"}


def _import_factory(spec: str):
    module, _, attr = spec.rpartition(":")
    try:
        if module.endswith(".py"):
            mspec = importlib.util.spec_from_file_location(Path(module).stem, module)
            if mspec is None or not Path(module).is_file():
                raise ImportError(module)
            mod = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(mod)
            top = Path(module).stem
        else:
            mod = importlib.import_module(module)
            top = module.split(".")[0]
        return getattr(mod, attr), top
    except (ImportError, AttributeError, FileNotFoundError, SyntaxError):
        raise InputError(f"oracle {spec!r}: cannot import it; give chgnet, sevennet, tblite, 'module:Class' "
                         "or 'file.py:factory' with an importable ASE calculator") from None


def make_oracle(name: str = DEFAULT_ORACLE, version: str | None = None, device: str = "cpu", **kwargs):
    """(ASE calculator, oracle label such as ``chgnet-0.3.0``) for oracle ``name``.

    ``name`` is a built-in (see :func:`available_oracles`) or ``module:ClassOrFactory`` /
    ``file.py:factory`` called with ``kwargs`` (e.g. ``ase.calculators.vasp:Vasp`` with VASP settings).
    """
    if name in BUILTIN:
        pkg = _PACKAGE.get(name)
        if pkg and importlib.util.find_spec(pkg) is None:
            raise InputError(f"oracle {name!r} needs the {pkg!r} package, which is not installed; "
                             f"pip install {pkg} or use another oracle (chgnet)")
        return BUILTIN[name](version=version, device=device, **kwargs)
    if ":" not in name:
        raise InputError(f"unknown oracle {name!r}; use {', '.join(BUILTIN)} or 'module:Class' for any ASE calculator")
    factory, top = _import_factory(name)
    try:
        calc = factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"oracle {name!r}: bad keyword arguments ({exc}); fix the oracle kwargs") from None
    label = f"{name}-{version}" if version else f"{name}-{_version(top)}"
    return calc, label


@dataclass
class FrameFailure:
    index: int
    error: str
    attempts: int


@dataclass
class LabelReport:
    """Result of labelling many frames: labelled frames (in input order) and per-frame failures."""
    frames: list = field(default_factory=list)
    failures: list[FrameFailure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"labelled": len(self.frames), "failed": len(self.failures),
                "failures": [f.__dict__ for f in self.failures]}


class Oracle:
    """An oracle: an ASE calculator plus its label; turns structures into labelled frames.

    >>> oracle = Oracle("chgnet")
    >>> frame = oracle.label(atoms, source="oracle-md", temperature_K=600)
    """

    def __init__(self, name: str = DEFAULT_ORACLE, version: str | None = None, device: str = "cpu",
                 calculator=None, label: str | None = None, compute_stress: bool = True, retries: int = 1,
                 **kwargs):
        if calculator is not None:
            self.calculator, self.name = calculator, label or f"{type(calculator).__name__}"
        else:
            self.calculator, self.name = make_oracle(name, version=version, device=device, **kwargs)
        self.compute_stress = compute_stress
        self.retries = int(retries)

    def _compute(self, atoms):
        from ase.calculators.singlepoint import SinglePointCalculator

        work = atoms.copy()
        work.calc = self.calculator
        self.calculator.reset() if hasattr(self.calculator, "reset") else None
        try:
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces(), dtype=float)
            stress = None
            if self.compute_stress and work.pbc.all():
                from ase.calculators.calculator import PropertyNotImplementedError

                try:
                    stress = np.array(work.get_stress(voigt=True), dtype=float)
                except PropertyNotImplementedError:
                    stress = None  # calculators without stress still give energy + forces labels
        except OracleError:
            raise
        except Exception as exc:  # noqa: BLE001 - SCF not converged, crashed code, ...
            raise OracleError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]) from exc
        if not np.isfinite(energy) or not np.isfinite(forces).all() or (stress is not None and not np.isfinite(stress).all()):
            raise OracleError("non-finite energy, forces or stress")
        if forces.shape != (len(work), 3):
            raise OracleError(f"forces have shape {forces.shape}, expected ({len(work)}, 3)")
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, energy=energy, forces=forces,
                                         **({"stress": stress} if stress is not None else {}))
        return out

    def label(self, atoms, source: str = "oracle", temperature_K: float | None = None,
              run_id: str | None = None):
        """One labelled frame (``ase.Atoms`` with a SinglePointCalculator); raises OracleError on failure."""
        last = None
        for attempt in range(1 + self.retries):
            try:
                out = self._compute(atoms)
                break
            except OracleError as exc:
                last = exc
                log.warning("oracle %s failed on a frame (attempt %d): %s", self.name, attempt + 1, exc)
        else:
            raise last
        # keep scalar metadata only (CIF readers add nested dicts that extxyz cannot store)
        out.info = {k: v for k, v in atoms.info.items()
                    if isinstance(v, (str, int, float, bool)) and k not in ("oracle", "source", "temperature_K", "run_id")}
        out.info["oracle"] = self.name
        out.info["source"] = source
        if temperature_K is not None:
            out.info["temperature_K"] = float(temperature_K)
        if run_id is not None:
            out.info["run_id"] = str(run_id)
        return out

    def label_many(self, frames, source: str = "oracle", temperature_K: float | None = None,
                   run_id: str | None = None) -> LabelReport:
        """Label every frame; failures are retried, then recorded and skipped (never raised)."""
        report = LabelReport()
        frames = list(frames)
        for i, atoms in enumerate(frames):
            progress.report("oracle labels", i, len(frames), "label")
            try:
                report.frames.append(self.label(atoms, source=source, temperature_K=temperature_K, run_id=run_id))
            except OracleError as exc:
                report.failures.append(FrameFailure(index=i, error=str(exc), attempts=1 + self.retries))
        progress.report("oracle labels", len(frames), len(frames), "label", final=True)
        return report


@dataclass
class LabelResult:
    """What labelling a batch of frames into the store gave (``shard`` is None when nothing was labelled)."""
    n_labels: int
    n_failed: int
    errors: list[str] = field(default_factory=list)     # the first few failure messages
    shard: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "LabelResult":
        return cls(**d)


def label_into_store(oracle: Oracle, frames, store, shard: str, source: str, temperature_K: float | None = None,
                     run_id: str | None = None) -> LabelResult:
    """Label ``frames`` with ``oracle`` (retries, stress) and store the good ones as the shard ``shard``.

    ``store`` is a :class:`reference.store.LabelStore`; the shard name is deterministic, so a retried
    call rewrites it.  Failed frames are counted, never fatal.
    """
    report = oracle.label_many(frames, source=source, temperature_K=temperature_K, run_id=run_id)
    path = store.write_shard(shard, report.frames, run_id=run_id) if report.frames else None
    return LabelResult(n_labels=len(report.frames), n_failed=len(report.failures),
                       errors=[f.error for f in report.failures[:5]], shard=None if path is None else str(path))
