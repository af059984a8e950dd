"""Production planned from a precision target, and the error budget of log10 σ(300 K).

:class:`PrecisionPlan` (the spec section ``precision``) sets a target error of log10 σ(300 K), a budget of
student MD and how the production temperatures are placed.  :func:`planned_temperatures` places them evenly in
1/T from the reference temperature down to where the mobile ion's MSD can still reach ``min_msd_A2`` within
the budget; :func:`next_chunk` decides, after every chunk of MD, which temperature gets the next one (the one
that shrinks the extrapolated error most per picosecond) or why production stops (target reached, budget
spent, the model term alone above the target: on the error only, never on the value).

:func:`error_budget` splits the error of log10 σ(300 K) into parts that add in quadrature:

* ``stat``: the GLS Arrhenius fit of D(T) with each temperature's error (replica scatter included);
* ``lack_of_fit``: what the fit's reduced chi^2 (> 1) adds to it; with 4 or more temperatures a weighted
  quadratic in 1/T tests for curvature (non-Arrhenius), flagged when significant at ``alpha``;
* ``model``: the student-vs-oracle disagreement of log10 D from the dynamics checks, carried to 300 K: with
  one checked temperature the offset as is (slope unchecked), with two the offset and its slope in 1/T.

Units: K, ps, cm^2/s, log10 of mS/cm.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from ase import units
from ase.data import atomic_numbers

from common.config import check_fields, param
from common.errors import InputError

AUTO = "auto"
HOP_LENGTH_A = 7.0          # relative error of D ~ HOP_LENGTH_A / sqrt(sum over mobile ions of their MSD)
TARGET, BUDGET, MODEL_LIMITED, NO_TEMPERATURE, NO_GAIN = (
    "target reached", "budget spent", "model error alone above the target", "no certified temperature left",
    "no chunk shrinks the error")


@dataclass(frozen=True)
class PrecisionPlan:
    """How much student MD production gets, where, and when it stops."""
    target_log10_err: float = param(0.3, "target total error of log10 sigma(300 K): production stops once reached",
                                    unit="log10 mS/cm", gt=0)
    budget_ps: float = param(200.0, "student MD per candidate over every production temperature and replica "
                             "(the judged exploration runs not counted)", unit="ps", gt=0)
    n_temperatures: int = param(5, "planned temperatures, the reference temperature included (when "
                                "md.temperatures_K is empty)", ge=2)
    lowest_temperature_K: float | None = param(None, "coldest planned temperature; null = where the mobile ion's "
                                               "MSD reaches stability.min_msd_A2 within an even share of the budget "
                                               "(under prior_activation_energy_eV)", unit="K", gt=0)
    prior_activation_energy_eV: float = param(0.25, "activation energy assumed only to place the planned "
                                              "temperatures", unit="eV", gt=0)
    audit_labels: int = param(8, "oracle single points on frames of the student's MD at each production "
                              "temperature: the accuracy check there (a temperature that fails it is left out "
                              "of the fit); 0 = none (its runs are then uncertified)", ge=0)
    transit_labels: int = param(4, "more oracle single points at each production temperature, on the frames with the "
                                "most mobile ions in transit between sites (hop barriers set Ea): the accuracy "
                                "check compares the student's error on ions in transit with its error on the "
                                "reference's; 0 = none (ions in transit among the spread frames still count)", ge=0)
    slope_check_temperature_K: float | str | None = param(
        AUTO, "the slope check: oracle MD (md.reference_steps) at a second temperature, whose dynamics check bounds "
        "the slope of the student's error in 1/T (force audits alone do not: docs/checks.md); 'auto' = the "
        "second-coldest production temperature below the reference's (the coldest when only one is), or the "
        "temperature of the candidate's reference_data.slope_trajectories entry; null = off (the model term's "
        "slope is then unchecked and the target is never claimed)", unit="K", gt=0)
    min_gain: float = param(0.02, "production stops (after every temperature's first chunk) when the rest of the budget, "
                            "spent at the best temperature, is predicted to shrink the total error by less than "
                            "this fraction of it", ge=0, lt=1)
    slope_labels: int | None = param(None, "frames of the slope check's reference the oracle labels (they train the "
                                     "student); null = active_learning.initial_labels", gt=0)

    def __post_init__(self):
        check_fields(self)
        if self.audit_labels == 1:
            raise InputError("precision.audit_labels: 1 frame has no scatter to judge; give 0 (off) or at least 2")
        if isinstance(self.slope_check_temperature_K, str) and self.slope_check_temperature_K != AUTO:
            raise InputError(f"precision.slope_check_temperature_K: {self.slope_check_temperature_K!r} is not a "
                             f"temperature; give a number (K), '{AUTO}' or null (off)")

    def slope_temperature(self, production_K, reference_K: float) -> float | None:
        """The slope check's temperature (K) among ``production_K``, or None (off, or no production temperature
        below ``reference_K``): a number as given, 'auto' the second-coldest below the reference's."""
        t = self.slope_check_temperature_K
        if t is None or not isinstance(t, str):
            return None if t is None else float(t)
        below = sorted(x for x in production_K if x < reference_K)
        return None if not below else (below[1] if len(below) > 1 else below[0])


# --- where ---------------------------------------------------------------------------------------------
def planned_temperatures(reference_K: float, reference_D_cm2_s: float | None, plan: PrecisionPlan,
                         min_msd_A2: float, chunk_ps: float) -> list[float]:
    """``plan.n_temperatures`` temperatures (K, hottest first) evenly spaced in 1/T from ``reference_K`` down to
    ``plan.lowest_temperature_K``, or to where 3 D(T) t reaches ``min_msd_A2`` (the MSD at the fit end, half
    the run) with t an even share of the budget (at least one chunk), D(T) from the reference's D under the
    prior Ea; never below 300 K.  Rounded to 1 K."""
    n = plan.n_temperatures
    low = plan.lowest_temperature_K
    if low is None:
        share_fs = 1000.0 * max(chunk_ps, plan.budget_ps / (n - 1))
        if reference_D_cm2_s and reference_D_cm2_s > 0:
            d_needed = min_msd_A2 / (3.0 * share_fs) / 10.0           # Å^2/fs -> cm^2/s
            ratio = reference_D_cm2_s / d_needed
            low = reference_K if ratio <= 1 else 1.0 / (1.0 / reference_K + units.kB / plan.prior_activation_energy_eV
                                                        * math.log(ratio))
        else:
            low = reference_K
    low = max(300.0, min(low, reference_K))
    if low >= reference_K:
        raise InputError(f"no room below the reference temperature {reference_K:g} K for production (the mobile ion "
                         "is too slow there for the budget); raise precision.budget_ps or give md.temperatures_K")
    inv = np.linspace(1.0 / reference_K, 1.0 / low, n)
    return [float(round(1.0 / x)) for x in inv]


# --- the extrapolated error and the next chunk -------------------------------------------------------------
def extrapolated_error(temperatures_K, rel_err, at_K: float = 300.0) -> float:
    """Standard error of log10 D(``at_K``) from a weighted Arrhenius fit of points with relative errors
    ``rel_err`` of D (inf with fewer than 2 distinct temperatures)."""
    t = np.asarray(temperatures_K, float)
    e = np.asarray(rel_err, float)
    ok = np.isfinite(e) & (e > 0)
    t, e = t[ok], e[ok]
    if len(np.unique(t)) < 2:
        return math.inf
    X = np.stack([np.ones_like(t), 1.0 / t], axis=1)
    cov = np.linalg.inv(X.T @ (X / e[:, None] ** 2))
    g = np.array([1.0, 1.0 / at_K])
    return float(math.sqrt(g @ cov @ g) / math.log(10))


@dataclass
class PointState:
    """One production temperature as the planner sees it: simulated time per replica so far (ps), D when
    measured, its relative error when also converged (None: too short to be fitted), and whether it may
    still be used."""
    temperature_K: float
    ps: float = 0.0
    diffusivity_cm2_s: float | None = None
    rel_err: float | None = None
    usable: bool = True            # False: failed its certification, or broke (no more chunks, out of the fit)


@dataclass
class Chunk:
    """The planner's decision: the temperature of the next chunk, or why production stops (``stop``); the
    predicted error after it and the error it had before."""
    temperature_K: float | None
    stop: str = ""
    error_before: float = math.inf
    error_after: float = math.inf
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Chunk":
        return cls(**d)


def predicted_rel_err(p: PointState, ps: float, d_cm2_s: float | None, n_ions: int, replicas: int,
                      discard_ps: float, min_msd_A2: float) -> float:
    """Relative error of D at ``p`` after ``ps`` per replica: the measured one scaled by 1/sqrt(time) when
    there is one, else the hop-count estimate (``HOP_LENGTH_A`` / sqrt of the summed MSD) with ``d_cm2_s``;
    inf when the MSD at the fit end would stay below ``min_msd_A2``."""
    t_fs = 1000.0 * max(0.0, ps - discard_ps)
    if p.rel_err is not None and p.ps > discard_ps:
        return p.rel_err * math.sqrt(max(p.ps - discard_ps, 1e-9) / max(ps - discard_ps, 1e-9))
    if not d_cm2_s or d_cm2_s <= 0 or t_fs <= 0:
        return math.inf
    msd_end = 3.0 * d_cm2_s * 10.0 * t_fs                        # Å^2 at the fit end (half the run)
    if msd_end < min_msd_A2:
        return math.inf
    return HOP_LENGTH_A / math.sqrt(n_ions * replicas * 2.0 * msd_end)


def next_chunk(points: list[PointState], plan: PrecisionPlan, chunk_ps: float, replicas: int, spent_ps: float,
               n_ions: int, discard_ps: float, min_msd_A2: float, model_err: float = 0.0, inflation: float = 1.0,
               arrhenius: tuple[float, float] | None = None, bounded: bool = True,
               model_after=None, model_floor: float | None = None) -> Chunk:
    """The next chunk (``chunk_ps`` per replica at one temperature) or why production stops.

    Every usable temperature gets a first chunk (hottest first: each is certified after it); then the
    temperature whose chunk lowers the predicted fit error of log10 D(300 K) most.  The fit error is the
    statistical one times sqrt(``inflation``) (the reduced chi^2 when > 1: the lack of fit shrinks with it);
    ``model_err`` adds in quadrature; ``model_after(point, n)``, when given, is the model term after n chunks at
    ``point`` (None: now; the student's side of a dynamics check shrinks with its runs there) and
    ``model_floor`` what it would be with the student's side exact.  ``arrhenius``:
    (intercept, slope of ln D in 1/T) of the current fit, for the D of temperatures without a measurement.
    Stops when the total error is at most ``plan.target_log10_err`` (never while ``bounded`` is False: the
    model term is unknown, or its slope unchecked), when the budget has no room for another chunk, when the
    model term alone (its floor when known) reaches the target once every temperature had a chunk, or when the rest of the budget spent at the best
    temperature would shrink the total by less than ``plan.min_gain`` of it."""
    usable = [p for p in points if p.usable]
    cost = chunk_ps * replicas

    def d_at(p: PointState) -> float | None:
        if p.diffusivity_cm2_s:          # measured, even where too short to be fitted yet
            return p.diffusivity_cm2_s
        return math.exp(arrhenius[0] + arrhenius[1] / p.temperature_K) if arrhenius else None

    def stat(with_chunk: PointState | None = None, n: int = 1) -> float:
        temps, errs = [], []
        for p in usable:
            if p is with_chunk:
                errs.append(predicted_rel_err(p, p.ps + n * chunk_ps, d_at(p), n_ions, replicas, discard_ps,
                                              min_msd_A2))
            elif p.rel_err is not None:
                errs.append(p.rel_err)
            else:
                continue
            temps.append(p.temperature_K)
        return extrapolated_error(temps, errs) * math.sqrt(max(1.0, inflation))

    if model_after is None:
        def model_after(_p, _n=1):
            return model_err
    model_err = model_after(None)
    floor = model_err if model_floor is None else model_floor
    now = stat()
    total = math.hypot(now, model_err)
    if not usable:
        return Chunk(None, NO_TEMPERATURE, total, total, "every production temperature failed its certification")
    if bounded and total <= plan.target_log10_err:
        return Chunk(None, TARGET, total, total, f"error {total:.2f} <= target {plan.target_log10_err:g}")
    first = [p for p in usable if p.ps == 0.0]
    if floor >= plan.target_log10_err and not first:     # every temperature gets its first chunk: a value
        return Chunk(None, MODEL_LIMITED, total, total, f"the model term {model_err:.2f} (at best {floor:.2f}) alone "
                     f"is >= the target {plan.target_log10_err:g}")
    if spent_ps + cost > plan.budget_ps + 1e-9:
        return Chunk(None, BUDGET, total, total, f"{spent_ps:g} of {plan.budget_ps:g} ps spent; a chunk costs "
                     f"{cost:g} ps")
    if first:
        p = max(first, key=lambda q: q.temperature_K)
        return Chunk(p.temperature_K, "", total, math.hypot(stat(p), model_after(p)), "first chunk at this temperature")
    scored = [(math.hypot(stat(p), model_after(p)), -p.temperature_K, p) for p in usable]
    after, _, best = min(scored, key=lambda s: (s[0], s[1]))
    left = int((plan.budget_ps - spent_ps + 1e-9) // cost)        # chunks the budget still buys
    best_left = min(math.hypot(stat(p, left), model_after(p, left)) for p in usable)
    if math.isfinite(total) and total - best_left < plan.min_gain * total:
        return Chunk(None, NO_GAIN, total, after, f"the rest of the budget ({left} chunks) would shrink the error "
                     f"{total:.2f} by {total - best_left:.3f} at best, less than {plan.min_gain:g} of it")
    return Chunk(best.temperature_K, "", total, after, f"predicted error {after:.2f}")


# --- the error budget --------------------------------------------------------------------------------------
@dataclass
class ModelCheck:
    """One dynamics check of the student against the oracle: log10(D_student / D_oracle) ± err at T (K), and the
    oracle's D ± err there (cm^2/s) when known, so that the student's side can be remeasured
    (:meth:`with_student`) as its production runs at T grow."""
    temperature_K: float
    log10_ratio: float
    log10_ratio_err: float
    oracle_D_cm2_s: float | None = None
    oracle_D_err_cm2_s: float | None = None

    def with_student(self, d_cm2_s: float | None, rel_err: float | None) -> "ModelCheck":
        """The check with the student's D and relative error replaced (itself without the oracle's D or a
        positive student D): errors add in quadrature as relative errors."""
        if not self.oracle_D_cm2_s or self.oracle_D_err_cm2_s is None or not d_cm2_s or d_cm2_s <= 0 \
                or rel_err is None or not math.isfinite(rel_err):
            return self
        err = math.hypot(rel_err, self.oracle_D_err_cm2_s / self.oracle_D_cm2_s) / math.log(10)
        return ModelCheck(self.temperature_K, math.log10(d_cm2_s / self.oracle_D_cm2_s), err, self.oracle_D_cm2_s,
                          self.oracle_D_err_cm2_s)


def remeasured(checks: list[ModelCheck], transport: dict | None) -> list[ModelCheck]:
    """``checks`` with the student's side taken from ``transport`` (``TransportResult.to_dict()``: all its
    stable runs) at each check's temperature where D was fitted there."""
    if not transport:
        return list(checks)
    found = {float(t): (d, e / d) for t, d, e, ok in zip(transport["temperatures_K"], transport["diffusivity_cm2_s"],
                                                         transport["diffusivity_cm2_s_err"], transport["converged"])
             if ok and d > 0}
    return [c.with_student(*found[float(c.temperature_K)]) if float(c.temperature_K) in found else c
            for c in checks]


@dataclass
class ErrorBudget:
    """The error of log10 σ(300 K) in parts that add in quadrature (``total``), and what bounds each."""
    stat: float
    lack_of_fit: float
    model: float | None                 # None: no dynamics check gave a number (the total is then unbounded)
    total: float
    model_bound: str                    # how the model term was bounded
    slope_checked: bool
    curvature_z: float | None           # the quadratic term of ln D in 1/T over its error (4+ temperatures)
    non_arrhenius: bool
    fit_range_K: tuple[float, float] | None
    extrapolation_ratio: float | None

    def to_dict(self) -> dict:
        """Flat keys of the results table and MLflow."""
        return {"log10_sigma_300K_err_stat": self.stat, "log10_sigma_300K_err_lack_of_fit": self.lack_of_fit,
                "log10_sigma_300K_err_model": self.model, "log10_sigma_300K_err_total": self.total,
                "model_bound": self.model_bound, "slope_checked": self.slope_checked,
                "curvature_z": self.curvature_z, "non_arrhenius": self.non_arrhenius,
                "fit_range_K": list(self.fit_range_K) if self.fit_range_K else None,
                "extrapolation_ratio": self.extrapolation_ratio}


def model_term(checks: list[ModelCheck], at_K: float = 300.0, prior: float | None = None) -> tuple[float | None, str, bool]:
    """The model term of log10 σ(``at_K``): (value, how it was bounded, slope checked).  ``prior``: a tier-1
    candidate's (no oracle dynamics of its own: ``checks`` empty), the value as given."""
    usable = [c for c in checks if c is not None and math.isfinite(c.log10_ratio) and math.isfinite(c.log10_ratio_err)]
    temps = sorted({c.temperature_K for c in usable})
    if prior is not None and not usable:
        return float(prior), f"tier 1: no oracle dynamics of this candidate, the transfer prior ±{prior:.2f}", False
    if not usable:
        return None, "no dynamics check against the oracle gave a number: model term unbounded", False
    if len(temps) == 1:
        c = usable[0]
        return (math.hypot(c.log10_ratio, c.log10_ratio_err),
                f"offset at {c.temperature_K:g} K carried to {at_K:g} K (slope unchecked)", False)
    lo, hi = (min(usable, key=lambda c: c.temperature_K), max(usable, key=lambda c: c.temperature_K))
    x0, x1, x2 = 1.0 / at_K, 1.0 / hi.temperature_K, 1.0 / lo.temperature_K
    f = (x0 - x1) / (x2 - x1)
    value = hi.log10_ratio + f * (lo.log10_ratio - hi.log10_ratio)
    err = math.hypot((1 - f) * hi.log10_ratio_err, f * lo.log10_ratio_err)
    return (math.hypot(value, err), f"offset and slope from {hi.temperature_K:g} and {lo.temperature_K:g} K "
            f"extrapolated to {at_K:g} K", True)


def curvature(temperatures_K, diffusivity, diffusivity_err) -> float | None:
    """z of the quadratic term of a weighted fit ln D = a + b x + c x^2 (x = 1/T, centred); None below 4 points."""
    t = np.asarray(temperatures_K, float)
    if len(t) < 4:
        return None
    y = np.log(np.asarray(diffusivity, float))
    e = np.asarray(diffusivity_err, float) / np.asarray(diffusivity, float)
    x = 1.0 / t
    x = (x - x.mean()) / (x.std() or 1.0)
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    w = 1.0 / np.maximum(e, 1e-12) ** 2
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    beta = cov @ (X.T @ (w * y))
    return float(beta[2] / math.sqrt(cov[2, 2]))


def error_budget(transport: dict, checks: list[ModelCheck], alpha: float = 0.05,
                 prior: float | None = None) -> ErrorBudget | None:
    """The budget of ``transport`` (``analysis.transport.TransportResult.to_dict()``; None without an
    Arrhenius fit) with the model term of ``checks`` (``prior``: a tier-1 candidate's, :func:`model_term`)."""
    from analysis.checks import z_two_sided

    if transport.get("log10_sigma_300K_err") is None:
        return None
    chi2 = transport.get("arrhenius_reduced_chi2")
    inflation = max(1.0, chi2) if chi2 is not None and math.isfinite(chi2) else 1.0
    err = float(transport["log10_sigma_300K_err"])
    stat = err / math.sqrt(inflation)
    lack = math.sqrt(max(0.0, err * err - stat * stat))
    fitted = [(t, d, e) for t, d, e, ok in zip(transport["temperatures_K"], transport["diffusivity_cm2_s"],
                                               transport["diffusivity_cm2_s_err"], transport["converged"])
              if ok and d > 0]
    z = curvature(*zip(*fitted)) if len(fitted) >= 4 else None
    model, bound, slope = model_term(remeasured(checks, transport), prior=prior)
    parts = [stat, lack] + ([model] if model is not None else [])
    total = math.sqrt(sum(p * p for p in parts)) if model is not None else math.inf
    temps = [t for t, _, _ in fitted]
    return ErrorBudget(stat, lack, model, total, bound, slope, z,
                       bool(z is not None and abs(z) > z_two_sided(alpha)),
                       (min(temps), max(temps)) if temps else None, transport.get("extrapolation_ratio"))


def plan_from_runs(runs: dict, ps: dict, failed, plan: PrecisionPlan, chunk_ps: float, replicas: int, spent_ps: float,
                   species: str, discard_ps: float, min_msd_A2: float, checks: list[ModelCheck],
                   prior: float | None = None) -> Chunk:
    """:func:`next_chunk` from trajectories: ``runs`` {T: [Trajectory]} of the stable runs so far and ``ps``
    {T: ps per replica} for every planned temperature; ``failed``: temperatures out of the plan; ``prior``: a
    tier-1 candidate's model term (fixed: more MD does not shrink it)."""
    from analysis.transport import transport

    failed = {float(t) for t in failed}
    kept = [t for T, ts in runs.items() if float(T) not in failed for t in ts]
    record = transport(kept, species, min_msd_A2).to_dict() if kept else None
    measured = {}          # T -> (D, its relative error when converged, else None: too short to fit yet)
    if record:
        for T, d, e, ok in zip(record["temperatures_K"], record["diffusivity_cm2_s"], record["diffusivity_cm2_s_err"],
                               record["converged"]):
            if d > 0:
                measured[float(T)] = (d, e / d if ok else None)
    points = [PointState(float(T), float(p), *measured.get(float(T), (None, None)), usable=float(T) not in failed)
              for T, p in ps.items()]
    budget = error_budget(record, checks, prior=prior) if record else None
    model, bounded = 0.0, True
    chi2 = (record or {}).get("arrhenius_reduced_chi2")
    if budget is not None:     # an unchecked slope bounds no Ea error: the target cannot be claimed
        bounded = budget.model is not None and (budget.slope_checked or prior is not None)
        model = budget.model or 0.0
    fit = (record["arrhenius_intercept"], record["arrhenius_slope_K"]) if record and "arrhenius_slope_K" in record \
        else None
    n_ions = int((np.asarray(kept[0].numbers) == atomic_numbers[species]).sum()) if kept else 1
    model_after, floor = None, None
    if prior is not None and not checks:
        floor = float(prior)
    elif budget is not None and budget.model is not None:
        at = {p.temperature_K: p for p in points}      # a fitted point's D and error: the student's side

        def student(c: ModelCheck, rel_err) -> ModelCheck:
            p = at.get(float(c.temperature_K))
            return c.with_student(p.diffusivity_cm2_s, rel_err(p)) if p is not None and p.rel_err is not None else c

        def model_after(chunk: PointState | None, n: int = 1) -> float:
            def err(p):
                return (predicted_rel_err(p, p.ps + n * chunk_ps, p.diffusivity_cm2_s, n_ions, replicas, discard_ps,
                                          min_msd_A2) if p is chunk else p.rel_err)
            return model_term([student(c, err) for c in checks])[0]

        # at best: the student's side exact and no offset (the measured one may be its noise); the oracle's
        # error stays
        floor = model_term([ModelCheck(c.temperature_K, 0.0, c.oracle_D_err_cm2_s / c.oracle_D_cm2_s / math.log(10))
                            if c.oracle_D_cm2_s and c.oracle_D_err_cm2_s is not None and float(c.temperature_K) in at
                            else c for c in checks])[0]
    return next_chunk(points, plan, chunk_ps, replicas, spent_ps, n_ions, discard_ps, min_msd_A2, model,
                      chi2 if chi2 is not None and math.isfinite(chi2) else 1.0, fit, bounded, model_after, floor)
