"""``results.json``'s ``phase_seconds``: where a run's wall time went (issue 22)."""

from __future__ import annotations

import json
import os
import time

from helpers import custom_task_args, make_model_dir
from test_cli import train_ok

from rankadapt.runtime.phases import PhaseClock, seconds_since_process_start


def test_the_clock_adds_up_repeated_phases():
    clock = PhaseClock()
    for _ in range(2):
        with clock.phase("evaluation"):
            time.sleep(0.01)
    clock.add("export", 0.5)
    record = clock.record()
    assert 0.02 <= record["evaluation"] < 0.5 and record["export"] == 0.5


def test_process_age_comes_from_proc_stat(tmp_path):
    """uptime − start ticks / CLK_TCK, with a command name holding spaces and a parenthesis."""
    (tmp_path / "self").mkdir()
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(100 * ticks)] + ["0"] * 10  # field 22 = start time: 100 s after boot
    (tmp_path / "self" / "stat").write_text("42 (odd) name) " + " ".join(fields))
    (tmp_path / "uptime").write_text("103.50 200.00\n")
    assert abs(seconds_since_process_start(tmp_path) - 3.5) < 1e-9
    assert seconds_since_process_start(tmp_path / "absent") is None


def test_a_run_records_its_phases(tmp_path):
    run_dir = tmp_path / "run"
    train_ok(*custom_task_args(tmp_path, make_model_dir(tmp_path / "model"), run_dir))
    results = json.loads((run_dir / "results.json").read_text())
    phases = results["phase_seconds"]
    assert {"data", "model", "setup", "run_dir", "train_loop", "evaluation", "predictions", "export",
            "checkpoint"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["train_loop"] == results["train_seconds"]


def test_only_the_first_clock_of_a_process_records_start_up():
    PhaseClock()  # whichever clock came first in this process (maybe an earlier test's run) claimed it
    assert "start_up" not in PhaseClock().record()
