"""Gather what a Training II run on the device has finished so far into a folder that comes back.

`self_forcing_device.sh` calls it at its end; a poll call of a detached run calls it too, so that a machine
taken back between calls loses only the work after the last poll:

    python3 benchmarks/collect_self_forcing.py /tmp/self_forcing $OUT --student /tmp/sf_out/world_causal.safetensors

Writes at most 8 files (the device brings back 8): results.json (every stage's metrics and every finished
evaluation), log.txt (the tail of each stage's and evaluation's output), the samples of five runs, and the
student when it exists.
"""

import argparse
import glob
import json
import os
import shutil

SAMPLE_LABELS = ("sf", "tf", "df", "goal", "teacher")
LOG_TAIL_CHARS = 20000


def _named(work: str, pattern: str, prefix: str, suffix: str) -> dict[str, dict]:
    """The json files of `work` matching `pattern`, keyed by their name between prefix and suffix."""
    found = {}
    for path in sorted(glob.glob(os.path.join(work, pattern))):
        name = os.path.basename(path)[len(prefix):-len(suffix)]
        try:
            with open(path) as f:
                found[name] = json.load(f)
        except json.JSONDecodeError:  # an evaluation rewriting its file right now: the next poll has it
            continue
    return found


def collect(work: str, out: str, student: str | None = None) -> list[str]:
    """Write results.json, log.txt, the samples and the student into `out`; return the files written."""
    os.makedirs(out, exist_ok=True)
    evals = {name: data["runs"] for name, data in _named(work, "eval_*.json", "eval_", ".json").items()}
    results = {"metrics": _named(work, "*_metrics.json", "", "_metrics.json"), "evals": evals}
    written = [os.path.join(out, "results.json"), os.path.join(out, "log.txt")]
    with open(written[0], "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    with open(written[1], "w") as log:
        for path in sorted(glob.glob(os.path.join(work, "*.out"))):
            with open(path, errors="replace") as f:
                log.write(f"==== {os.path.basename(path)}\n" + f.read()[-LOG_TAIL_CHARS:])
    copies = [os.path.join(work, f"samples_{label}.npz") for label in SAMPLE_LABELS] + ([student] if student else [])
    for path in copies:
        target = os.path.join(out, os.path.basename(path))
        if os.path.isfile(path) and os.path.abspath(path) != os.path.abspath(target):
            shutil.copy(path, target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", help="the run's WORK folder (stage outputs, evaluations)")
    parser.add_argument("out", help="the folder to fill ($OUT on the device)")
    parser.add_argument("--student", help="the exported student to bring back too (world_causal.safetensors)")
    args = parser.parse_args()
    for path in collect(args.work, args.out, args.student):
        print(path)


if __name__ == "__main__":
    main()
