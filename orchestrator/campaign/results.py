"""The campaign's results: ranked rows from the ledger, ``results.csv`` and the console table."""
from __future__ import annotations

import csv
import io

from orchestrator.campaign.state import Ledger


RESULT_COLUMNS = ["rank", "candidate", "formula", "prototype", "reason", "verdict", "rounds",
                  "log10_sigma_300K", "log10_sigma_300K_err", "activation_energy_eV", "activation_energy_eV_err",
                  "simulated_ns", "detail"]


def ranked(ledger: Ledger, rank_by: str = "log10_sigma_300K") -> list[dict]:
    """Candidates as result rows: converged ones ranked by ``rank_by`` (Ea: lower is better), then the rest."""
    rows = []
    for c in ledger.candidates():
        res = c["results"] or {}
        rows.append({"candidate": c["key"], "formula": c["formula"], "prototype": c["prototype"] or "",
                     "stage": c["stage"], "reason": c["reason"] or "", "verdict": c["verdict"] or "",
                     "rounds": c["round"] + (1 if c["stage"] != "pending" else 0),
                     "log10_sigma_300K": res.get("log10_sigma_300K"),
                     "log10_sigma_300K_err": res.get("log10_sigma_300K_err"),
                     "activation_energy_eV": res.get("activation_energy_eV"),
                     "activation_energy_eV_err": res.get("activation_energy_eV_err"),
                     "conductivity_mS_cm": res.get("conductivity_mS_cm"),
                     "temperatures_K": res.get("temperatures_K"),
                     "simulated_ns": round(c["simulated_ps"] / 1000.0, 6), "detail": c["detail"] or ""})

    def score(row):
        value = row.get(rank_by)
        if isinstance(value, list):
            value = value[-1] if value else None
        if row["reason"] != "converged" or value is None:
            return (1, 0.0)
        return (0, value if rank_by == "activation_energy_eV" else -value)

    rows.sort(key=score)
    for i, row in enumerate(rows, 1):
        row["rank"] = i if row["reason"] == "converged" and score(row)[0] == 0 else None
    return rows


def results_csv(ledger: Ledger, rank_by: str = "log10_sigma_300K") -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in ranked(ledger, rank_by):
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in RESULT_COLUMNS})
    return buf.getvalue()


def format_table(rows: list[dict]) -> str:
    """The ranked table for the console."""

    def pm(v, e, fmt="{:.2f}"):
        if v is None:
            return "-"
        return (fmt.format(v) + (" ± " + fmt.format(e) if e is not None else ""))

    head = ["rank", "candidate", "reason", "rounds", "log10 σ300K (mS/cm)", "Ea (eV)", "sim ps"]
    body = [[str(r["rank"] or "-"), r["candidate"], r["reason"] or r["stage"], str(r["rounds"]),
             pm(r["log10_sigma_300K"], r["log10_sigma_300K_err"]),
             pm(r["activation_energy_eV"], r["activation_energy_eV_err"], "{:.3f}"), f"{r['simulated_ns'] * 1000:.1f}"]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def results_markdown(rows: list[dict]) -> str:
    """The ranked table as Markdown, units in the headers (the campaign run's ``results/results.md``)."""

    def num(v, fmt):
        return "" if v is None else format(v, fmt)

    head = ["rank", "candidate", "formula", "reason", "verdict", "rounds", "log10 σ(300 K) [log10 mS/cm]",
            "± [log10 mS/cm]", "Ea [eV]", "± [eV]", "simulated [ps]", "detail"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [str(r["rank"] or ""), r["candidate"], r["formula"], r["reason"] or r["stage"], r["verdict"],
                 str(r["rounds"]), num(r["log10_sigma_300K"], ".2f"), num(r["log10_sigma_300K_err"], ".2f"),
                 num(r["activation_energy_eV"], ".3f"), num(r["activation_energy_eV_err"], ".3f"),
                 f"{r['simulated_ns'] * 1000:.1f}", r["detail"].replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
