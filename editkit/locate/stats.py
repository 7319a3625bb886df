"""Second moments ``C = E[k kᵀ]`` of an MLP output projection's input, over the generic corpus.

``C`` is what ROME, MEMIT and AlphaEdit protect: ROME's rank-one update is ``C⁻¹``-shaped, MEMIT's
least-squares weighs it against the new keys, AlphaEdit takes its null space. It depends only on the
unedited model, the layer, the corpus and the sample count, so it is computed once per such tuple and cached
on disk as safetensors beside the model cache (``$EDITKIT_CACHE/stats/…``, or ``$EDITKIT_STATS_CACHE``),
reused by every method and every run. The corpus's token ids are cached there too, so a later request for
another layer only re-reads them. Each computation says in one line what it cost (time, peak memory,
samples), and the same figures are stored in a JSON file next to the matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from editkit.layers import TokenShape, resolve_module
from editkit.models import cache_dir

from .corpus import CORPUS_ID, generate_corpus

STATS_ENV = "EDITKIT_STATS_CACHE"
FORWARD_BATCH = 16


def stats_root() -> Path:
    explicit = os.environ.get(STATS_ENV)
    return Path(explicit).expanduser() if explicit else cache_dir() / "stats"


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes, bytes) of the model as it is now.

    The statistics belong to the *unedited* model, so editors take this when they are built (before any
    edit) and key the cache by it: two copies of the same weights share their statistics, a fine-tuned
    checkpoint gets its own."""
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-d buffers too (Gemma)
    return digest.hexdigest()


class _Enough(Exception):
    """Raised once the highest layer the statistics need has seen its input."""


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def second_moments(
    model: torch.nn.Module,
    tokenizer: Any,
    module_paths: Sequence[str],
    samples: int,
    fingerprint: str,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """``{path: C}`` (float32, [in, in]) for the input of each module in ``module_paths``, from the cache
    where it holds them, else computed in one pass for all the missing ones (and cached)."""
    directory = stats_root() / fingerprint[:24] / f"{CORPUS_ID}-{samples}"
    result: dict[str, torch.Tensor] = {}
    missing = []
    for path in module_paths:
        file = directory / f"{path}.safetensors"
        if file.is_file():
            result[path] = load_file(str(file))["mom2"]
        else:
            missing.append(path)
    if missing:
        result.update(_compute(model, tokenizer, missing, samples, directory, progress))
    return {path: result[path] for path in module_paths}


def _corpus(model: torch.nn.Module, tokenizer: Any, samples: int, directory: Path, progress: bool) -> list[torch.Tensor]:
    file = directory / "corpus.safetensors"
    if file.is_file():
        stored = load_file(str(file))
        return [stored[str(i)] for i in range(len(stored))]
    bar = (lambda it: tqdm(it, desc="  stats corpus", unit="batch", leave=False)) if progress else None
    texts = [torch.tensor(t, dtype=torch.long) for t in generate_corpus(model, tokenizer, samples, progress=bar)]
    directory.mkdir(parents=True, exist_ok=True)
    save_file({str(i): t for i, t in enumerate(texts)}, str(file) + ".tmp")
    os.replace(str(file) + ".tmp", file)
    return texts


@torch.no_grad()
def _compute(
    model: torch.nn.Module, tokenizer: Any, paths: Sequence[str], samples: int, directory: Path, progress: bool
) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    texts = _corpus(model, tokenizer, samples, directory, progress)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    current: dict[str, torch.Tensor] = {}  # the valid-token mask of the batch being read
    remaining: set[str] = set()

    def hook_for(path: str):
        def grab(_module: torch.nn.Module, args: tuple) -> None:
            keys = shapes[path].view(args[0])[current["mask"]].double()  # OPT feeds [B·T, D]
            sums[path] = sums[path] + keys.T @ keys if path in sums else keys.T @ keys
            remaining.discard(path)
            if not remaining:
                raise _Enough

        return grab

    shapes = {path: TokenShape(model, path) for path in paths}
    handles = [resolve_module(model, path).register_forward_pre_hook(hook_for(path)) for path in paths]
    batches = range(0, len(texts), FORWARD_BATCH)
    try:
        for first in tqdm(batches, desc="  stats keys", unit="batch", leave=False, disable=not progress):
            rows = texts[first : first + FORWARD_BATCH]
            width = max(len(r) for r in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, r in enumerate(rows):
                ids[i, : len(r)], mask[i, : len(r)] = r, True
            current["mask"] = mask.to(device)
            remaining.update(paths)
            try:
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device), use_cache=False)
            except _Enough:
                pass
            count += int(mask.sum())
    finally:
        for handle in [*handles, *shapes.values()]:
            handle.remove()
    seconds = time.perf_counter() - start
    peak = _peak_memory_mb(device)
    info = {
        "corpus": CORPUS_ID, "samples": samples, "tokens": count, "seconds": round(seconds, 2),
        "peak_memory_mb": peak, "peak_memory_of": "cuda allocated" if device.type == "cuda" else "process RSS",
        "device": str(device), "modules": list(paths),
    }
    directory.mkdir(parents=True, exist_ok=True)
    result = {}
    for path in paths:
        result[path] = (sums[path] / count).float().cpu()
        tmp = directory / f"{path}.safetensors.tmp"
        save_file({"mom2": result[path].contiguous()}, str(tmp), metadata={k: str(v) for k, v in info.items()})
        os.replace(tmp, directory / f"{path}.safetensors")
        (directory / f"{path}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"editkit: second moments of {len(paths)} module(s) over {samples} generated texts ({count} tokens, "
        f"{CORPUS_ID}): {seconds:.1f} s, peak memory {peak} MB ({info['peak_memory_of']}); cached in {directory}",
        file=sys.stderr,
    )
    return result
