"""The URL a campaign prints, opened in a real browser (headless Chromium from Debian's packages; skipped with
the reason where it is not installed): MLflow's model-training view, the runs by name, a candidate's page.
Not in the services group: it needs an MLflow server, not Ray, so it runs beside the Ray tests."""
from __future__ import annotations

import subprocess

import pytest

from test_mlflow_server import server  # noqa: F401  (the module's own `mlflow server`)


def _page_text(url: str) -> str:
    """The text a real browser renders at ``url`` (headless Chromium, JavaScript run for up to 20 s)."""
    import html
    import re
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` tries to)")
    out = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", out.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


def test_the_printed_url_opens_the_runs_in_a_real_browser(server, tmp_path):
    """The URL the campaign prints opens the experiment's runs in MLflow's model-training view (not the GenAI
    view MLflow 3 opens by default): the campaign's run is listed by name, and a candidate's page shows its
    name, the description that points to the metric glossary and its metrics."""
    from orchestrator.campaign.spec import validate
    from orchestrator.campaign.tracking import Tracker, mlflow_ui_lines, mlflow_ui_url

    spec = validate({"name": "browsed"})
    tr = Tracker(server, "matscreen-browsed")
    tr.start_campaign("b:1", "browsed", spec.to_dict(), spec.to_yaml())
    cand = tr.log_candidate("b:1", "Li10GeP2S12__Li10GeP2S12", {"formula": "Li10GeP2S12", "prototype": "LGPS"}, [],
                            {"log10_sigma_300K": 1.2, "log10_sigma_300K_err": 0.3}, "stable", "converged",
                            name="Li10GeP2S12")
    tr.finish_campaign("b:1", None, {"done": 1})
    url = mlflow_ui_url(server, "matscreen-browsed")
    assert url.endswith("/runs?workflowType=machine_learning") and url in mlflow_ui_lines(server, "matscreen-browsed")
    runs = _page_text(url)
    assert "matching runs" in runs and "browsed" in runs and "Observability" not in runs and "Judges" not in runs
    bare = _page_text(url.split("?")[0])             # without the view in the URL MLflow 3 opens its GenAI view
    assert "Observability" in bare and "Judges" in bare
    page = _page_text(url.replace("/runs?", f"/runs/{cand}?"))
    assert "Li10GeP2S12" in page and "docs/metrics.md" in page and "log10_sigma_300K" in page
