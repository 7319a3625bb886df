"""File fingerprints recorded with every run (dataset files, model weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a 500 MB weight file never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads from a model directory (safetensors first)."""
    return sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))


def weights_sha256(directory: Path) -> str | None:
    """sha256 of the weight file ``from_pretrained`` reads (checkable with ``sha256sum``); for sharded
    weights, of the ``"<sha256>  <name>\\n"`` listing of the shards in name order; None if there are none."""
    files = weight_files(directory)
    if not files:
        return None
    if len(files) == 1:
        return sha256_file(files[0])
    listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def weights_fingerprint(directory: Path) -> dict[str, list[int]]:
    """Name → [size, mtime_ns] of each weight file: what a manifest records next to the hash it computed."""
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in weight_files(directory)}


def loaded_weights_sha256(directory: Path, manifest: Mapping[str, Any] | None) -> str | None:
    """The hash of the weights in ``directory`` as loaded now.

    A manifest's recorded hash is used only when the fingerprint it recorded of the weight files (names,
    sizes, modification times) is that of the files now; an ``editkit.json`` copied along with re-saved
    weights, or one that records no fingerprint, is not trusted and the files are hashed."""
    recorded = (manifest or {}).get("weights_sha256")
    if isinstance(recorded, str) and (manifest or {}).get("weights_files") == weights_fingerprint(directory):
        return recorded
    return weights_sha256(directory)
