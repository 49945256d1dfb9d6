"""Model folders: registers `models/self_forcing`, and resolves names from the API only inside
ComfyUI's own model folders (no absolute paths, no `..`)."""
from __future__ import annotations

import os
import posixpath

import folder_paths

MODEL_FOLDERS = ("self_forcing", "diffusion_models")
DECODER_FOLDERS = ("vae", "vae_approx")
TEXT_ENCODER_FOLDERS = ("text_encoders",)
EXTENSIONS = {".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin"}


BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
BUNDLED_FOLDERS = ("self_forcing", "vae", "text_encoders")


def register_folders() -> None:
    """Add `models/self_forcing` to ComfyUI's folders (keeping paths an extra_model_paths.yaml set), and
    the pack's own `models/` (the bundled world model) to the transformer, VAE and text-encoder lists."""
    default = os.path.join(folder_paths.models_dir, "self_forcing")
    for folder in BUNDLED_FOLDERS:
        paths, extensions = folder_paths.folder_names_and_paths.get(folder, ([], set()))
        wanted = [default] if folder == "self_forcing" else []
        if os.path.isdir(BUNDLED_DIR):
            wanted.append(BUNDLED_DIR)
        paths = [*paths, *(path for path in wanted if path not in paths)]
        folder_paths.folder_names_and_paths[folder] = (paths, set(extensions) | EXTENSIONS)


def list_files(folders: tuple[str, ...]) -> list[str]:
    """Every model file name in `folders`, in folder order, without duplicates."""
    names: dict[str, None] = {}
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths:
            names.update(dict.fromkeys(folder_paths.get_filename_list(folder)))
    return list(names)


def resolve(folders: tuple[str, ...], name: str, what: str) -> str:
    """The full path of `name` inside the first of `folders` that holds it; refuses anything else."""
    normal = posixpath.normpath(name.replace("\\", "/"))
    if not name or os.path.isabs(name) or normal.startswith("../") or normal == ".." or ":" in name:
        raise ValueError(f"{what} {name!r} is not a file name inside ComfyUI's models folders "
                         f"({', '.join(folders)}); pick one of the listed files")
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths and name in folder_paths.get_filename_list(folder):
            path = folder_paths.get_full_path(folder, name)
            if path is not None:
                return path
    raise FileNotFoundError(f"{what} {name!r} was not found in models/{' or models/'.join(folders)}; "
                            "put the file there (then press R in the UI to refresh the list)")
