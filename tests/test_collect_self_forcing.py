"""The device run's collector: what has finished comes back, a file being rewritten does not break it."""
from __future__ import annotations

import json
import os

from benchmarks.collect_self_forcing import collect


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def test_collect_gathers_finished_work_and_skips_a_half_written_evaluation(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    _write(work / "self_forcing_metrics.json", json.dumps({"generator_steps": 90}))
    _write(work / "eval_sf.json", json.dumps({"runs": {"text_1x": {"adherence": 41.0}}}))
    _write(work / "eval_tf.json", '{"runs": {"text_1x": {"adher')
    _write(work / "self_forcing.out", "x" * 30000 + "last line\n")
    _write(work / "samples_sf.npz", "sf samples")
    _write(work / "samples_init.npz", "not brought back")
    student = tmp_path / "sf_out" / "world_causal.safetensors"
    student.parent.mkdir()
    _write(student, "weights")

    written = collect(str(work), str(out), str(student))

    assert sorted(os.path.basename(p) for p in written) == [
        "log.txt", "results.json", "samples_sf.npz", "world_causal.safetensors"]
    results = json.loads((out / "results.json").read_text())
    assert results == {"metrics": {"self_forcing": {"generator_steps": 90}},
                       "evals": {"sf": {"text_1x": {"adherence": 41.0}}}}
    log = (out / "log.txt").read_text()
    assert log.startswith("==== self_forcing.out\n") and log.endswith("last line\n")
    assert len(log) < 25000
    assert (out / "world_causal.safetensors").read_text() == "weights"


def test_collect_into_the_folder_that_already_holds_the_student(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    _write(out / "world_causal.safetensors", "weights")

    written = collect(str(work), str(out), str(out / "world_causal.safetensors"))

    assert sorted(os.path.basename(p) for p in written) == ["log.txt", "results.json"]
    assert (out / "world_causal.safetensors").read_text() == "weights"
    assert json.loads((out / "results.json").read_text()) == {"metrics": {}, "evals": {}}
