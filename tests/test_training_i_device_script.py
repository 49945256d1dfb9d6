"""The detached device run's poll: it must not spend a call waiting on a machine that lost the run."""
from __future__ import annotations

import os
import subprocess
import tarfile

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "training_i_device.sh")


def _poll(work, out, seconds: int = 60) -> subprocess.CompletedProcess:
    """Run `poll`; the timeout, far under `seconds` of 600, fails a poll that waits on a finished run."""
    return subprocess.run(["bash", SCRIPT, "poll", str(work), str(out), str(seconds)],
                          capture_output=True, text=True, timeout=120)


def test_poll_fails_at_once_when_the_run_is_gone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = _poll(tmp_path / "never_started", out)
    assert done.returncode == 3
    assert "fresh one" in done.stdout
    assert os.listdir(out) == []


def test_poll_collects_a_finished_run_without_waiting(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "teacher").mkdir(parents=True)
    out.mkdir()
    (work / "stages.out").write_text("[0s] teacher\n[90s] done\n")
    (work / "teacher" / "teacher.log").write_text("teacher step 50 loss 0.1\n")
    (work / "teacher" / "world_teacher.safetensors").write_text("weights")
    (work / "teacher" / "world_text_encoder.safetensors").write_text("text")

    done = _poll(work, out, seconds=600)

    assert done.returncode == 0, done.stderr
    assert "[90s] done" in done.stdout
    assert sorted(os.listdir(out)) == ["logs.tgz", "world_teacher.safetensors", "world_text_encoder.safetensors"]
    with tarfile.open(out / "logs.tgz") as logs:
        names = logs.getnames()
    assert "./teacher/teacher.log" in names
    assert not any(name.endswith(".safetensors") for name in names)
