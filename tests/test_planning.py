"""Production planned from a precision target (analysis.planning): placement of the temperatures, the chunk
allocation, the stop rules on a walk world whose D(T) is known exactly, and the error budget's parts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from ase import units

from analysis.planning import (BUDGET, MODEL_LIMITED, NO_GAIN, TARGET, ModelCheck, PointState, PrecisionPlan, error_budget,
                               extrapolated_error, model_term, next_chunk, plan_from_runs, planned_temperatures)
from analysis.transport import transport
from common.errors import InputError
from common.trajectory import Trajectory

EA, D0 = 0.25, 3e-3           # the walk world: D(T) = D0 exp(-EA / kT), cm^2/s
DT_FS = 50.0                  # time between frames
FRAMES_PER_PS = int(1000 / DT_FS)


def d_true(t: float) -> float:
    return D0 * math.exp(-EA / (units.kB * t))


def walk(t: float, ps: float, seed: int, n_li: int = 24, box: float = 10.0) -> Trajectory:
    """Independent Li walkers with D(t) among a still framework; the first ``ps`` of one fixed realisation
    (a longer run at the same seed extends the shorter one, as a production chunk extends its run)."""
    rng = np.random.default_rng(seed)
    n = int(ps * FRAMES_PER_PS)
    start, sites = rng.random((n_li, 3)) * box, rng.random((16, 3)) * box
    steps = rng.normal(0, math.sqrt(2 * d_true(t) / 0.1 * DT_FS), (max(4000, n), n_li, 3))[:n]  # same prefix
    li = start + np.cumsum(steps, axis=0)
    fw = np.broadcast_to(sites, (n, 16, 3))
    x = np.concatenate([li, fw], axis=1)
    return Trajectory(numbers=np.array([3] * n_li + [16] * 16), positions=x % box, unwrapped=x,
                      cells=np.broadcast_to(np.eye(3) * box, (n, 3, 3)), steps=np.arange(n), dt_fs=DT_FS,
                      temperature_K=t)


def campaign(plan: PrecisionPlan, temps: list[float], chunk_ps: float, model: list[ModelCheck], seed: int = 0):
    """The planner's loop on the walk world: returns (stop chunk, ps per temperature, transport record)."""
    ps = {t: 0.0 for t in temps}
    spent = 0.0
    while True:
        runs = {t: [walk(t, p, seed + int(t))] for t, p in ps.items() if p > 0}
        chunk = plan_from_runs(runs, ps, [], plan, chunk_ps, 1, spent, "Li", 0.0, 10.0, model)
        if chunk.temperature_K is None:
            record = transport([r for rs in runs.values() for r in rs], "Li", 10.0).to_dict()
            return chunk, ps, record
        ps[chunk.temperature_K] += chunk_ps
        spent += chunk_ps


def test_planned_temperatures_are_even_in_inverse_t_from_the_reference_down_to_where_the_msd_reaches():
    plan = PrecisionPlan(budget_ps=100.0, n_temperatures=5)
    temps = planned_temperatures(1000.0, d_true(1000.0), plan, 10.0, 5.0)
    assert temps[0] == 1000.0 and len(temps) == 5 and temps == sorted(temps, reverse=True)
    assert np.allclose(np.diff(1.0 / np.array(temps)), (1 / temps[-1] - 1 / 1000.0) / 4, rtol=0.02)
    share_fs = 1000.0 * 100.0 / 4
    assert 3 * d_true(temps[-1]) * 10 * share_fs == pytest.approx(10.0, rel=0.05)  # under the prior Ea = EA
    assert planned_temperatures(1000.0, d_true(1000.0), PrecisionPlan(budget_ps=400.0), 10.0, 5.0)[-1] < temps[-1]
    assert planned_temperatures(1000.0, None, PrecisionPlan(lowest_temperature_K=600.0), 10.0, 5.0)[-1] == 600.0
    with pytest.raises(InputError, match="budget_ps"):          # too slow even at the reference temperature
        planned_temperatures(1000.0, 1e-9, plan, 10.0, 5.0)


def test_the_allocation_prefers_the_temperature_that_shrinks_the_300K_error_most():
    plan = PrecisionPlan(target_log10_err=0.01, budget_ps=1000.0)
    even = [PointState(t, 10.0, d_true(t), 0.1) for t in (1000.0, 800.0, 600.0)]
    assert next_chunk(even, plan, 10.0, 1, 30.0, 24, 0.0, 10.0).temperature_K == 600.0   # the lever arm
    skewed = [PointState(1000.0, 10.0, d_true(1000.0), 0.5), PointState(800.0, 10.0, d_true(800.0), 0.5),
              PointState(600.0, 10.0, d_true(600.0), 0.01)]
    assert next_chunk(skewed, plan, 10.0, 1, 30.0, 24, 0.0, 10.0).temperature_K != 600.0  # 600 K is precise already
    for points in (even, skewed):            # the choice is the best of all: no other one predicts less
        chosen = next_chunk(points, plan, 10.0, 1, 30.0, 24, 0.0, 10.0)
        for p in points:
            errs = [q.rel_err * (math.sqrt(q.ps / (q.ps + 10.0)) if q is p else 1) for q in points]
            assert chosen.error_after <= extrapolated_error([q.temperature_K for q in points], errs) + 1e-12
    fresh = even + [PointState(700.0)]       # a temperature never run gets its first chunk before any second
    assert next_chunk(fresh, plan, 10.0, 1, 30.0, 24, 0.0, 10.0).temperature_K == 700.0
    # production stops when the rest of the budget would hardly change the error: one chunk left here
    best = next_chunk(even, plan, 10.0, 1, 990.0, 24, 0.0, 10.0)
    gain = (best.error_before - best.error_after) / best.error_before
    assert 0.02 < gain < 0.5
    stingy = PrecisionPlan(target_log10_err=0.01, budget_ps=1000.0, min_gain=gain + 0.01)
    stop = next_chunk(even, stingy, 10.0, 1, 990.0, 24, 0.0, 10.0)
    assert stop.temperature_K is None and stop.stop == NO_GAIN
    assert next_chunk(even, stingy, 10.0, 1, 30.0, 24, 0.0, 10.0).temperature_K is not None  # 97 chunks left
    assert next_chunk(fresh, stingy, 10.0, 1, 30.0, 24, 0.0, 10.0).temperature_K == 700.0   # first chunks run


def test_the_planner_reaches_the_target_on_a_world_with_known_d_and_stops_at_the_budget_when_it_cannot():
    temps = [1000.0, 850.0, 740.0, 650.0]
    exact = [ModelCheck(1000.0, 0.0, 0.005), ModelCheck(650.0, 0.0, 0.005)]      # offset and slope checked
    stop, ps, record = campaign(PrecisionPlan(target_log10_err=0.25, budget_ps=400.0), temps, 10.0, exact)
    assert stop.stop == TARGET and stop.error_before <= 0.25
    assert sum(ps.values()) <= 400.0 and all(p >= 10.0 for p in ps.values())
    assert abs(record["activation_energy_eV"] - EA) < 3 * record["activation_energy_eV_err"]   # the known world
    stop, ps, _ = campaign(PrecisionPlan(target_log10_err=0.05, budget_ps=60.0), temps, 10.0, exact)
    assert stop.stop == BUDGET and sum(ps.values()) == 60.0
    stop, ps, _ = campaign(PrecisionPlan(target_log10_err=0.3, budget_ps=400.0), temps, 10.0,
                           [ModelCheck(1000.0, 0.4, 0.05)])
    assert stop.stop == MODEL_LIMITED        # more MD cannot shrink a model term above the target
    stop, ps, _ = campaign(PrecisionPlan(target_log10_err=0.25, budget_ps=120.0), temps, 10.0, exact[:1])
    assert stop.stop == BUDGET and sum(ps.values()) == 120.0   # slope unchecked: the target is never claimed


def test_the_error_budget_parts_add_up_and_say_how_the_model_term_was_bounded():
    runs = [walk(t, 40.0, k) for k, t in enumerate((1000.0, 850.0, 740.0, 650.0))]
    record = transport(runs, "Li", 10.0).to_dict()
    one = error_budget(record, [ModelCheck(1000.0, 0.1, 0.05)])
    assert one.total == pytest.approx(math.sqrt(one.stat ** 2 + one.lack_of_fit ** 2 + one.model ** 2))
    assert one.model == pytest.approx(math.hypot(0.1, 0.05)) and not one.slope_checked
    assert "slope unchecked" in one.model_bound
    assert one.stat == pytest.approx(record["log10_sigma_300K_err"] / math.sqrt(max(1.0, record["arrhenius_reduced_chi2"])))
    assert one.curvature_z is not None and one.fit_range_K == (650.0, 1000.0)
    two = error_budget(record, [ModelCheck(1000.0, 0.1, 0.05), ModelCheck(700.0, 0.2, 0.05)])
    assert two.slope_checked and two.model > one.model          # the error grows towards 300 K with its slope
    value, _, _ = model_term([ModelCheck(1000.0, 0.1, 0.0), ModelCheck(500.0, 0.2, 0.0)])
    assert value == pytest.approx(0.1 + 0.1 * (1 / 300 - 1 / 1000) / (1 / 500 - 1 / 1000))
    none = error_budget(record, [])
    assert none.model is None and none.total == math.inf and "unbounded" in none.model_bound


def test_the_slope_checks_student_side_is_remeasured_and_more_md_there_shrinks_the_model_term():
    """The model term's student side is the production runs' D at the check's temperature (remeasured as they
    grow); the planner sends chunks to the slope check's temperature when that shrinks the total most, and
    stops as model-limited only when the term's floor (the student's side exact) is above the target."""
    temps = [1000.0, 850.0, 740.0, 650.0]
    oracle = {t: (d_true(t), 0.1 * d_true(t)) for t in (1000.0, 650.0)}     # the oracle's D with a 10 % error
    checks = [ModelCheck(t, 0.0, 1.0, *oracle[t]) for t in (1000.0, 650.0)]  # the judge's first, loose checks
    runs = [walk(t, 40.0, k) for k, t in enumerate(temps)]
    record = transport(runs, "Li", 10.0).to_dict()
    now = error_budget(record, checks)
    assert now.slope_checked and now.model < 1.0                      # remeasured from the 40 ps runs, not 1.0
    rel = {t: e / d for t, d, e in zip(record["temperatures_K"], record["diffusivity_cm2_s"],
                                       record["diffusivity_cm2_s_err"])}
    c650 = checks[1].with_student(d_true(650.0), rel[650.0])
    assert c650.log10_ratio == pytest.approx(0.0, abs=1e-12)
    assert c650.log10_ratio_err == pytest.approx(math.hypot(rel[650.0], 0.1) / math.log(10))
    assert ModelCheck(650.0, 0.1, 0.2).with_student(1e-5, 0.1) == ModelCheck(650.0, 0.1, 0.2)  # no oracle D: as is

    # the student's side dominates the model term: the next chunks go to 650 K
    plan = PrecisionPlan(target_log10_err=0.3, budget_ps=400.0)
    stop, ps, _ = campaign(plan, temps, 10.0, checks)
    assert ps[650.0] == max(ps.values()) and ps[650.0] > 10.0
    assert stop.stop in (TARGET, BUDGET, NO_GAIN)
    # an oracle D too uncertain for the target at any student precision: model-limited from the floor
    loose = [ModelCheck(t, 0.0, 1.0, d, 0.6 * d) for t, (d, _) in oracle.items()]
    stop, ps, _ = campaign(plan, temps, 10.0, loose)
    assert stop.stop == MODEL_LIMITED and "at best" in stop.reason and sum(ps.values()) < 100.0


def test_curvature_is_flagged_on_a_non_arrhenius_world_and_not_on_an_arrhenius_one():
    from analysis.planning import curvature

    t = np.array([1000.0, 900.0, 800.0, 700.0, 600.0])
    arr = np.array([d_true(x) for x in t])
    assert abs(curvature(t, arr, 0.05 * arr)) < 1.0
    bent = arr * np.exp(3e6 * (1 / t - 1 / 800.0) ** 2)     # ln D(1/T) bent by 0.5 at the ends
    assert abs(curvature(t, bent, 0.05 * bent)) > 3.0
    assert curvature(t[:3], arr[:3], 0.05 * arr[:3]) is None


def test_a_temperature_too_short_to_fit_gets_the_chunk_that_brings_it_into_the_fit():
    plan = PrecisionPlan(target_log10_err=0.01, budget_ps=1000.0)
    points = [PointState(1000.0, 48.0, d_true(1000.0), 0.09), PointState(800.0, 6.0, d_true(800.0), 0.2),
              PointState(600.0, 6.0, 4e-5, None)]             # measured, its MSD still below min_msd_A2
    assert next_chunk(points, plan, 6.0, 1, 12.0, 20, 1.0, 10.0).temperature_K == 600.0


def test_a_campaign_whose_budget_buys_too_many_chunks_is_refused_with_the_fix(tmp_path):
    from orchestrator.campaign.driver import Campaign
    from orchestrator.campaign.spec import validate

    spec = validate({"md": {"steps": 100, "equilibration_steps": 10}, "precision": {"budget_ps": 200.0}})
    with pytest.raises(InputError, match="raise md.steps or lower the budget"):
        Campaign(spec, store=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert not (tmp_path / "store").exists()                          # nothing written
