"""Replay a golden vector of the official implementation and print `max_abs_err=<number>` last.

Usage: python tests/reference_check.py CASE.safetensors [--device cpu]

The file's safetensors metadata ("meta", JSON) says what it is: a sampler case ("model" and
"sampler"), a VAE case ("vae") or a umT5 case ("t5"). Everything is recomputed in float64 from the
case's own weights and inputs, so cases never seen before (other sizes, seeds, chunking) work too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_meta(path: str) -> dict:
    """The JSON description a golden case carries in its safetensors metadata."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "meta" not in metadata:
        raise SystemExit(f"{path}: no 'meta' entry in the safetensors metadata; not a golden case")
    return json.loads(metadata["meta"])


def replay(path: str) -> float:
    """Max abs error between our float64 recomputation and the case's recorded outputs."""
    meta = read_meta(path)
    if "model" in meta and "sampler" in meta:
        from replay_sampler import replay as run
    elif "vae" in meta:
        from replay_vae import replay as run
    elif "t5" in meta:
        from replay_umt5 import replay as run
    else:
        raise SystemExit(f"{path}: meta has none of model+sampler / vae / t5; unknown case kind")
    return run(path, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="golden vector .safetensors file")
    args = parser.parse_args()
    error = replay(args.case)
    print(f"max_abs_err={error:.3e}")


if __name__ == "__main__":
    main()
