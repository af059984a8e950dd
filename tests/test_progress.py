"""Progress that moves: the loops report (MD ps, training epochs, oracle labels) to a file, the campaign's line
says the newest report with its rate and time left, redrawn on a terminal and throttled in a log."""
from __future__ import annotations

import io
import json
import time

from common import progress
from md.protocol import Protocol
from md.runner import BatchedMD


def test_a_report_is_written_throttled_and_said_with_its_rate_and_time_left(tmp_path):
    path = tmp_path / "worker.json"
    progress.report("student MD", 1.0, 12.0, "ps")              # no sink: nothing written, nothing raised
    assert not path.exists()
    with progress.reporting(path):
        progress.report("student MD", 0.0, 12.0, "ps", systems=3)
        first = json.loads(path.read_text())
        progress.report("student MD", 0.5, 12.0, "ps", systems=3)          # within 2 s: not written
        assert json.loads(path.read_text()) == first
        time.sleep(0.05)
        progress.report("student MD", 3.0, 12.0, "ps", final=True, systems=3)
    d = progress.latest(tmp_path)
    assert d["done"] == 3.0 and d["rate_per_s"] > 0 and d["extra"] == {"systems": 3}
    text = progress.describe(d)
    assert text.startswith("student MD 3.0/12.0 ps, 3 systems") and "ns/day" in text and "ETA" in text
    assert progress.describe({"task": "training", "done": 5, "total": 24, "unit": "epoch", "rate_per_s": 0.5,
                              "extra": {"loss": 0.1234}}) == "training epoch 5/24, loss 0.123, ETA 38s"
    assert progress.latest(tmp_path, max_age_s=-1) is None                # a stale report is not shown


def test_the_md_engine_reports_its_ps(tmp_path):
    from ase.build import bulk

    from md.runner import SystemSpec
    from models import LennardJones

    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    protocol = Protocol.study(timestep_fs=5.0, total_fs=200.0, ramp_fs=50.0, stride=5, checkpoint_every=20)
    with progress.reporting(tmp_path / "progress" / "md.json"):
        BatchedMD(LennardJones(cutoff=5.0), [SystemSpec("a", atoms, 50.0, 0), SystemSpec("b", atoms, 60.0, 1)],
                  protocol, tmp_path / "run", device="cpu").run()
    d = progress.latest(tmp_path / "progress")
    assert (d["task"], d["done"], d["total"], d["unit"], d["extra"]) == ("student MD", 0.2, 0.2, "ps", {"systems": 2})


def test_the_line_redraws_on_a_terminal_and_prints_at_most_every_30_s_in_a_log():
    from orchestrator.campaign.progress import ProgressView

    summary = {"total": 4, "done": 1, "converged": 0, "inconclusive": 1, "failed": 0, "running": 1, "pending": 2,
               "round": 0, "simulated_ns": 0.09, "now": ["Li10SnP2S12 tier1"]}

    class Tty(io.StringIO):
        def isatty(self):
            return True

    log, tty = io.StringIO(), Tty()
    views = [ProgressView(log), ProgressView(tty, min_interval_s=0.0)]
    for k in range(3):
        for view in views:
            view({**summary, "activity": f"training epoch {k + 1}/10, loss 0.2"})
    assert len(log.getvalue().splitlines()) == 1                       # a log: once within 30 s ...
    assert tty.getvalue().count("\r\033[K") == 3 and "training epoch 3/10" in tty.getvalue()
    for view in views:
        view({**summary, "done": 2, "activity": None})                 # ... and whenever a candidate finishes
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "Li10SnP2S12 tier1 | training epoch 1/10" in lines[0]
    assert lines[1].startswith("candidates 2/4 done")
