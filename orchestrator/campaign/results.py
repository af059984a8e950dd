"""The campaign's results: ranked rows from the ledger, ``results.csv`` and the console table.

Each row shows the evidence behind its number: the RDF MAE against the reference beside the
reference's own noise floor, the student's D(Li) beside the reference's at the reference temperature,
its force error on oracle-audited frames of its own MD beside its error on the reference's held-out frames,
and, where the structure library knows one, the measured value with its source (the oracle is not the
truth: a student can only be as good as its oracle).
"""
from __future__ import annotations

import math

from analysis.ranking import THRESHOLD_MS_CM, TOP_K
from common import vocabulary as V
from common.tables import console, csv_text, markdown

from orchestrator.campaign.state import Ledger


RESULT_COLUMNS = ["rank", "name", "candidate", "formula", "prototype", "tier", "reason", "verdict", "rounds",
                  "log10_sigma_300K", "log10_sigma_300K_err_total", "p_above_threshold", "threshold_mS_cm", "p_top_k",
                  "top_k", "log10_sigma_300K_err_stat",
                  "log10_sigma_300K_err_lack_of_fit", "log10_sigma_300K_err_model", "model_bound", "non_arrhenius",
                  "target_log10_err", "stopped_by", "certified_K", "left_out_K", "slope_check_K",
                  "repaired_K", "student_ps_by_T", "log10_sigma_300K_err", "activation_energy_eV", "activation_energy_eV_err",
                  "too_short_K", "extrapolation_ratio", "rdf_mae", "rdf_noise_floor", "rdf_status",
                  "student_D_cm2_s", "reference_D_cm2_s", "log10_D_ratio", "log10_D_ratio_err", "dynamics_status",
                  "force_error_eV_A", "reference_force_error_eV_A", "log10_force_error_ratio",
                  "log10_force_error_ratio_err", "accuracy_status", "known_log10_sigma_300K", "known_source", "tier1_log10_sigma_300K",
                  "tier1_log10_sigma_300K_err_total", "tier2", "family_force_mae_meV_A", "oracle_labels",
                  "simulated_ns", "why", "detail"]


BUDGET_KEYS = ("log10_sigma_300K_err_total", "log10_sigma_300K_err_stat", "log10_sigma_300K_err_lack_of_fit",
               "log10_sigma_300K_err_model", "model_bound", "non_arrhenius", "target_log10_err", "stopped_by")


def known_sigma(values: list[dict]) -> tuple[float | None, str]:
    """log10 of a known conductivity at 300 K (mS/cm) and its source: experiment first, else published AIMD."""
    from reference.structures import known_log10_sigma

    value, source = known_log10_sigma(values, "experiment")
    return (value, source) if value is not None else known_log10_sigma(values)


def ranked(ledger: Ledger, rank_by: str = "log10_sigma_300K", threshold_mS_cm: float = THRESHOLD_MS_CM,
           top_k: int = TOP_K) -> list[dict]:
    """Candidates as result rows: converged ones ranked by ``rank_by`` (Ea: lower is better), then the rest.
    Each ranked row with log10 sigma(300 K) and its total error gets ``p_above_threshold`` (P(sigma(300 K) >
    ``threshold_mS_cm``)) and ``p_top_k`` (P(among the ``top_k`` highest of them); ``analysis.ranking``)."""
    rows = []
    pick = ledger.step("tier2") or {}
    for c in ledger.candidates():
        res = c["results"] or {}
        first = res.get("tier1") or (res if res.get("tier") == 1 else {})
        rows.append({"candidate": c["key"], "formula": c["formula"], "prototype": c["prototype"] or "",
                     "stage": c["stage"], "reason": c["reason"] or "", "verdict": c["verdict"] or "",
                     "rounds": c["round"] + (1 if c["stage"] != "pending" else 0),
                     "log10_sigma_300K": res.get("log10_sigma_300K"),
                     "log10_sigma_300K_err": res.get("log10_sigma_300K_err"),
                     "activation_energy_eV": res.get("activation_energy_eV"),
                     "activation_energy_eV_err": res.get("activation_energy_eV_err"),
                     "conductivity_mS_cm": res.get("conductivity_mS_cm"),
                     "temperatures_K": res.get("temperatures_K"),
                     "too_short_K": " ".join(f"{t:g}" for t in res.get("too_short_K", [])),
                     "extrapolation_ratio": res.get("extrapolation_ratio"),
                     **{k: res.get(k) for k in BUDGET_KEYS},
                     "certified_K": " ".join(f"{t}:{v}" for t, v in (res.get("certification_by_T") or {}).items()),
                     "left_out_K": " ".join(f"{t:g}" for t in res.get("left_out_K", [])),
                     "slope_check_K": res.get("slope_check_K"),
                     "repaired_K": " ".join(f"{p['temperature_K']:g}" for p in res.get("repairs", [])),
                     "student_ps_by_T": " ".join(f"{t}:{v:g}" for t, v in (res.get("student_ps_by_T") or {}).items()),
                     "simulated_ns": round(c["simulated_ps"] / 1000.0, 6), "detail": c["detail"] or "",
                     "tier": res.get("tier"), "tier1_log10_sigma_300K": first.get("log10_sigma_300K"),
                     "tier1_log10_sigma_300K_err_total": first.get("log10_sigma_300K_err_total"),
                     "tier2": _tier2(c["key"], res, pick),
                     "family_force_mae_meV_A": res.get("family_force_mae_meV_A"),
                     "family_unknown_elements": " ".join(res.get("family_unknown_elements") or []),
                     "oracle_labels": res.get("oracle_labels")})
        chk = res.get("checks", {})
        rows[-1].update(rdf_mae=chk.get("rdf_mae"), rdf_noise_floor=chk.get("rdf_noise_floor"),
                        rdf_status=chk.get("rdf_status", ""), student_D_cm2_s=chk.get("student_D_cm2_s"),
                        reference_D_cm2_s=chk.get("reference_D_cm2_s"), log10_D_ratio=chk.get("log10_ratio"),
                        log10_D_ratio_err=chk.get("log10_ratio_err"), dynamics_status=chk.get("dynamics_status", ""),
                        force_error_eV_A=chk.get("own_error_eV_A"),
                        reference_force_error_eV_A=chk.get("reference_error_eV_A"),
                        log10_force_error_ratio=chk.get("error_log10_ratio"),
                        log10_force_error_ratio_err=chk.get("error_log10_ratio_err"),
                        accuracy_status=chk.get("accuracy_status", ""))
        rows[-1]["known_log10_sigma_300K"], rows[-1]["known_source"] = known_sigma(res.get("known_values"))

    def score(row):
        value = row.get(rank_by)
        if isinstance(value, list):
            value = value[-1] if value else None
        if row["reason"] != V.CONVERGED or value is None:
            return (1, 0.0)
        return (0, value if rank_by == "activation_energy_eV" else -value)

    seen = [r["formula"] for r in rows]
    for r in rows:      # the name a person reads: the formula, with its prototype where two share one
        r["name"] = f"{r['formula']} ({r['prototype']})" if seen.count(r["formula"]) > 1 and r["prototype"] \
            else r["formula"]
    rows.sort(key=score)
    for i, row in enumerate(rows, 1):
        row["rank"] = i if row["reason"] == V.CONVERGED and score(row)[0] == 0 else None
    _sureness(rows, threshold_mS_cm, top_k)
    for row in rows:
        row["why"] = _words(row)[len("not ranked: "):] if row["rank"] is None else None
    return rows


def _tier2(key: str, res: dict, pick: dict) -> str:
    """How tier 2 stands for a candidate, from its results and the ``tier2`` step (``pick``)."""
    if key in pick.get("picked", []):
        return "picked"
    if res.get("tier") == 2 and res.get("tier1") is None:
        return "verified"
    if key in pick.get("over_budget", []):
        return "could be top k: no oracle-MD budget left"
    return "not needed" if pick and res.get("tier") == 1 else ""


def _sureness(rows: list[dict], threshold_mS_cm: float, top_k: int) -> None:
    """``p_above_threshold`` and ``p_top_k`` of the ranked rows with a value and a total error (None otherwise)."""
    from analysis.ranking import p_above, p_top_k

    sure = [r for r in rows if r["rank"] is not None and r.get("log10_sigma_300K") is not None
            and _total(r) is not None and math.isfinite(r["log10_sigma_300K"]) and math.isfinite(_total(r))]
    for r in rows:
        r.update(p_above_threshold=None, p_top_k=None, threshold_mS_cm=threshold_mS_cm, top_k=top_k)
    if not sure:
        return
    tops = p_top_k([r["log10_sigma_300K"] for r in sure], [_total(r) for r in sure], top_k)
    for r, top in zip(sure, tops):
        r["p_above_threshold"] = round(p_above(r["log10_sigma_300K"], _total(r), math.log10(threshold_mS_cm)), 3)
        r["p_top_k"] = round(float(top), 3)


def results_csv(ledger: Ledger, rank_by: str = "log10_sigma_300K", threshold_mS_cm: float = THRESHOLD_MS_CM,
                top_k: int = TOP_K) -> str:
    return rows_csv(ranked(ledger, rank_by, threshold_mS_cm, top_k))


def rows_csv(rows: list[dict]) -> str:
    """``results.csv`` of :func:`ranked` rows."""
    return csv_text(rows, RESULT_COLUMNS)


def _pm(v, e, fmt="{:.2f}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v) + (" ± " + fmt.format(e) if e is not None else "")


def _total(r: dict):
    """The error the row ranks on: the budget's total when there is one, else the fit's."""
    total = r.get("log10_sigma_300K_err_total")
    return total if total is not None else r.get("log10_sigma_300K_err")


def _parts(r: dict) -> str:
    parts = [r.get(f"log10_sigma_300K_err_{k}") for k in ("stat", "lack_of_fit", "model")]
    if parts[0] is None:
        return "-"
    return "/".join("?" if p is None else f"{p:.2f}" for p in parts)


def _evidence(r: dict) -> tuple[str, str, str]:
    """'MAE / noise (status)', 'log10 Ds/Dref ± err (status)' and 'own / reference force error (status)' cells."""
    rdf = "-" if r.get("rdf_mae") is None else \
        f"{r['rdf_mae']:.3f} / {r['rdf_noise_floor']:.3f} ({r['rdf_status']})" if r.get("rdf_noise_floor") is not None \
        else f"{r['rdf_mae']:.3f} ({r['rdf_status']})"
    dyn = "-" if r.get("log10_D_ratio") is None else \
        f"{r['log10_D_ratio']:+.2f} ± {r['log10_D_ratio_err']:.2f} ({r['dynamics_status']})"
    acc = "-" if r.get("force_error_eV_A") is None else \
        f"{1000 * r['force_error_eV_A']:.0f} / {1000 * r['reference_force_error_eV_A']:.0f} ({r['accuracy_status']})"
    return rdf, dyn, acc


def _tier(r: dict) -> str:
    """'1', '2', or '2 (tier 1: x.xx)' when tier 2 superseded a tier-1 number."""
    if r.get("tier") is None:
        return "-"
    first = r.get("tier1_log10_sigma_300K")
    return f"2 (tier 1: {first:.2f})" if r["tier"] == 2 and first is not None else str(r["tier"])


def _words(r: dict) -> str:
    """The decisive evidence in words: why a row has no rank, else what its checks found."""
    if r.get("rank") is None:
        if r.get("log10_sigma_300K") is None and r.get("reason") in V.FINISHED_WELL:
            short = r.get("too_short_K")
            why = "no log10 σ(300 K): " + (f"too short at {short} K, run longer" if short else
                                            "fewer than 2 temperatures kept")
        else:
            why = (r.get("detail") or "").split(";")[0].strip() or r.get("reason") or r.get("stage") or "not screened"
        return f"not ranked: {why}"
    said = [f"{name} {r[key]}" for name, key in (("structure", "rdf_status"), ("dynamics", "dynamics_status"),
                                                  ("accuracy", "accuracy_status")) if r.get(key)]
    if r.get("tier") == 1:
        said.append("no oracle MD (tier 1)")
    return ", ".join(said) or "-"


def _known(r: dict) -> str:
    return "-" if r.get("known_log10_sigma_300K") is None else f"{r['known_log10_sigma_300K']:.2f}"


def _p(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _sure_heads(rows: list[dict]) -> tuple[str, str]:
    """The probability columns' headers, naming the threshold and k."""
    t = rows[0].get("threshold_mS_cm", THRESHOLD_MS_CM) if rows else THRESHOLD_MS_CM
    k = rows[0].get("top_k", TOP_K) if rows else TOP_K
    return f"P(σ300K>{t:g} mS/cm)", f"P(top {k})"


def _heads(rows: list[dict]) -> list[str]:
    t, k = _sure_heads(rows)
    return ["rank", "candidate", "tier", "status", "log10 σ(300 K) [log10 mS/cm]", "Ea [eV]", t, k, "known",
            "evidence"]


def _cells(r: dict, width: int | None = None) -> list[str]:
    """The ten cells of a row (console and Markdown; everything else is in results.csv)."""
    words = _words(r)
    if width is not None and len(words) > width:
        words = words[:width - 1] + "…"
    return [str(r["rank"] or "-"), r["name"], _tier(r), r["reason"] or r["stage"], _pm(r["log10_sigma_300K"], _total(r)),
            _pm(r["activation_energy_eV"], r["activation_energy_eV_err"], "{:.3f}"), _p(r.get("p_above_threshold")),
            _p(r.get("p_top_k")), _known(r), words]


def _notes(rows: list[dict]) -> list[str]:
    """Lines under the table: known values' sources, each candidate's error budget, tiers and production."""
    lines = [f"known: {s}" for s in sorted({r["known_source"] for r in rows if r.get("known_source")})]
    for r in rows:
        name = r["name"]
        if r.get("log10_sigma_300K_err_stat") is not None:
            lines.append(f"{name}: error of log10 σ(300 K): stat/lack of fit/model {_parts(r)}; checks: RDF MAE / noise "
                         "{}, log10 D/D_ref {}, force error own/ref [meV/Å] {}".format(*_evidence(r)))
        if r.get("tier") == 1 or r.get("tier1_log10_sigma_300K") is not None or r.get("tier2") == "picked":
            lines.append(f"{name}: tier 1 "
                         f"{_pm(r.get('tier1_log10_sigma_300K'), r.get('tier1_log10_sigma_300K_err_total'))}"
                         + (f" (family model's force MAE on it before fine-tuning {r['family_force_mae_meV_A']:.0f} "
                            f"meV/Å, {r['oracle_labels']} oracle labels)" if r.get("family_force_mae_meV_A") is not None
                            else f" (the family model had no {r['family_unknown_elements']}: fine-tuned on its labels, "
                            f"{r['oracle_labels']} oracle labels)" if r.get("family_unknown_elements") else "")
                         + (f"; tier 2: {r['tier2']}" if r.get("tier2") else ""))
        if r.get("stopped_by"):
            reached = "reached" if r["stopped_by"] == "target reached" else f"not reached ({r['stopped_by']})"
            lines.append(f"{name}: target ±{r['target_log10_err']:g} {reached}; certified {r['certified_K']}"
                         f"{'; left out ' + r['left_out_K'] + ' K' if r['left_out_K'] else ''}"
                         f"{'; repaired at ' + r['repaired_K'] + ' K' if r.get('repaired_K') else ''}"
                         f"; {'slope check at %g K' % r['slope_check_K'] if r.get('slope_check_K') else 'slope unchecked'}"
                         f"; student ps {r['student_ps_by_T']} ({r['rounds']} round{'s' if r['rounds'] != 1 else ''}); "
                         f"{'model term: ' + r['model_bound'] if r.get('model_bound') else 'no Arrhenius fit (see too_short_K)'}"
                         f"{'; non-Arrhenius (curvature significant)' if r.get('non_arrhenius') else ''}")
    return lines


def format_table(rows: list[dict]) -> str:
    """The ranked table for the console (ten columns, the rest in results.csv), then the notes per candidate."""
    return "\n".join([console(_heads(rows), [_cells(r, 70) for r in rows]), *_notes(rows)])


def results_markdown(rows: list[dict]) -> str:
    """The same table as Markdown (the campaign run's ``results/results.md``), the notes as a list under it."""
    return markdown(_heads(rows), [_cells(r) for r in rows]) + "\n" + "".join(f"\n- {n}" for n in _notes(rows)) + "\n"
