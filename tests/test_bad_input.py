"""The bad-input catalogue: every kind of bad input, through the real command line, gives one line that
names the problem, exit code 2, no traceback, and leaves what an earlier run wrote byte for byte intact.

Every refused command below is aimed, with ``--overwrite``, at a copy of a finished run: validation must
happen before anything in the output directory is touched, so a copy that changed by a single byte fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import request_rows

from editkit.cli import main
from editkit.testing import tiny_model_and_tokenizer, tiny_tokenizer

GOOD = request_rows(3)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "good.jsonl", GOOD)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_file: Path) -> Path:
    """A complete FT run (state included) on the tiny model: the results no refused command may touch."""
    out = tmp_path_factory.mktemp("finished") / "run"
    main(["run", "ft", "--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out), "--no-progress"])
    assert (out / "summary.json").is_file() and (out / "state" / "state.safetensors").is_file()
    return out


@pytest.fixture()
def refused(capsys: pytest.CaptureFixture, tmp_path: Path, finished_run: Path, tiny_model_dir: Path) -> Callable[..., str]:
    """``refused(*args, model=..., out=...)``: run ``editkit ARGS --model M --out O --overwrite`` into a copy of
    a finished run; assert exit 2, one line on stderr, no traceback and an untouched copy; return the line."""

    def run(*args: Any, model: Path | None = None, out: Path | None = None) -> str:
        if out is None:
            out = tmp_path / "out"
            shutil.copytree(finished_run, out, dirs_exist_ok=True)
        before = snapshot(out)
        argv = [*map(str, args), "--model", str(model or tiny_model_dir), "--out", str(out), "--overwrite", "--no-progress"]
        with pytest.raises(SystemExit) as info:
            main(argv)
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert info.value.code == 2, captured.err
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert snapshot(out) == before, "a refused command changed the results already written"
        return lines[0]

    return run


# ------------------------------------------------------------------------------------------ data files
def test_malformed_json(refused, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{broken"])
    line = refused("run", "ft", "--data", bad)
    assert "bad.jsonl, record 1: invalid JSON on line 2" in line


def test_missing_field(refused, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {k: v for k, v in GOOD[1].items() if k != "target"}])
    assert "bad.jsonl, record 1, field 'target': missing field" in refused("run", "ft", "--data", bad)


def test_empty_field(refused, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {**GOOD[1], "prompt": "   "}])
    assert "bad.jsonl, record 1, field 'prompt': is empty" in refused("run", "ft", "--data", bad)


def test_non_utf8_bytes(refused, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(GOOD[0]).encode() + b'\n{"id": "r1", "prompt": "caf\xe9", "target": "x"}\n')
    assert "bad.jsonl: not UTF-8 text (bad byte at offset" in refused("run", "ft", "--data", bad)


def test_duplicate_request_ids(refused, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], GOOD[1], {**GOOD[2], "id": "r0"}])
    assert "bad.jsonl, record 2, field 'id': id 'r0' already used by record 0" in refused("run", "ft", "--data", bad)


# ------------------------------------------------------------------------- data that does not fit the model
@pytest.fixture(scope="module")
def dropping_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tokenizer whose normalizer deletes '~' and trims spaces, as real tokenizers
    delete characters they have no token for: a target of '~' tokenizes to nothing."""
    from tokenizers import normalizers

    path = tmp_path_factory.mktemp("dropping-model")
    model, _ = tiny_model_and_tokenizer()
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Replace("~", ""), normalizers.Strip()])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_target_that_tokenizes_to_nothing(refused, tmp_path, dropping_model_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {**GOOD[1], "target": "~~"}])
    line = refused("run", "ft", "--data", bad, model=dropping_model_dir)
    assert "bad.jsonl, record 1, field 'target': tokenizes to no tokens" in line and "'r1'" in line


def test_prompt_longer_than_the_context(refused, tmp_path):
    # the tiny tokenizer gives one token per byte; the tiny model's context is 512 positions
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {**GOOD[1], "rephrases": ["ok", "x" * 600]}])
    line = refused("run", "ft", "--data", bad)
    assert "bad.jsonl, record 1, field 'rephrases[1]'" in line and "longer than the model's context of 512 tokens" in line


# ------------------------------------------------------------------------------- methods and configs
def test_unknown_method(refused, data_file):
    line = refused("compare", "--methods", "ft,nope", "--data", data_file)
    assert "unknown method 'nope'" in line and "ft" in line


def test_unknown_config_key(refused, data_file):
    assert "has no option 'colour'" in refused("run", "ft", "--set", "colour=red", "--data", data_file)


def test_layer_path_that_does_not_exist(refused, data_file):
    line = refused("run", "ft", "--set", "layer=model.layers.99.mlp.down_proj", "--data", data_file)
    assert "layer path 'model.layers.99.mlp.down_proj' does not exist" in line and "0-3" in line


@pytest.mark.parametrize("path, kind", [("model.layers.0.mlp", "LlamaMLP"), ("model.norm", "LlamaRMSNorm")])
def test_layer_path_that_is_not_a_linear(refused, data_file, path, kind):
    for method in ("ft", "memoir"):  # one option name for the edited module in every method
        line = refused("run", method, "--set", f"layer={path}", "--data", data_file)
        assert f"layer path '{path}' is a {kind}, not a Linear layer" in line


EASYEDIT = Path(__file__).parent / "fixtures" / "easyedit"


@pytest.mark.parametrize(
    "method, edit, needle",
    [
        ("memoir", "replay: true", "unknown key 'replay' for memoir; known keys:"),
        ("memoir", "objective_optimization: label_and_context", "key 'objective_optimization': 'label_and_context' is not supported"),
        ("memoir", 'inner_params: ["model.layers[1].mlp.down_proj.weight", "model.layers[2].mlp.down_proj.weight"]', "one module, got 2"),
        ("ft", "layers: [1, 2]", "key 'layers': editkit edits one layer, got 2"),
        ("memoir", "alg_name: FT", "hparams of alg_name 'FT', not of memoir (MEMOIR)"),
        ("memoir", "top_k: [oops", "invalid YAML at line"),
        ("memoir", "n_iter: lots", "option 'n_iter': cannot read 'lots' as int"),
        ("none", "", "method 'none' does not read EasyEdit hparams"),
    ],
)
def test_easyedit_hparams(refused, data_file, tmp_path, method: str, edit: str, needle: str):
    """A YAML line appended to a good hparams file (a later key replaces an earlier one)."""
    hparams = tmp_path / "hparams.yaml"
    base = "ft-tiny.yaml" if method == "ft" else "memoir-tiny.yaml"
    hparams.write_text((EASYEDIT / base).read_text() + edit + "\n")
    line = refused("run", method, "--hparams", hparams, "--data", data_file)
    assert str(hparams) in line and needle in line


@pytest.fixture(scope="module")
def seq2seq_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    path = tmp_path_factory.mktemp("t5-model")
    config = T5Config(vocab_size=258, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_model_that_is_not_a_causal_lm(refused, data_file, seq2seq_model_dir):
    line = refused("run", "none", "--data", data_file, model=seq2seq_model_dir)
    assert f"could not load model '{seq2seq_model_dir}'" in line and "T5Config" in line


# ------------------------------------------------------------------------------------------ state files
def test_corrupted_state_tensors(refused, data_file, finished_run, tmp_path):
    state = shutil.copytree(finished_run / "state", tmp_path / "state")
    tensors = state / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])
    line = refused("run", "ft", "--load-state", state, "--data", data_file)
    assert f"{tensors}: corrupted editor state" in line


def test_corrupted_state_metadata(refused, data_file, finished_run, tmp_path):
    state = shutil.copytree(finished_run / "state", tmp_path / "state")
    (state / "state.json").write_text('{"editor": "ft", "state": ')
    assert f"{state / 'state.json'}: corrupted editor state" in refused("run", "ft", "--load-state", state, "--data", data_file)


def test_state_of_another_method(refused, data_file, finished_run):
    line = refused("run", "memoir", "--load-state", finished_run / "state", "--data", data_file)
    assert "state of editor 'ft', not 'memoir'" in line


def test_state_of_another_layer(refused, data_file, finished_run):
    other_layer = "layer=model.layers.1.mlp.down_proj"
    line = refused("run", "ft", "--set", other_layer, "--load-state", finished_run / "state", "--data", data_file)
    assert f"{finished_run / 'state'}: FT state edits" in line and "model.layers.1.mlp.down_proj" in line


def test_state_of_another_model(refused, data_file, finished_run, tmp_path):
    """Same method, same layer path, another width: the saved weight does not fit."""
    from editkit.testing import tiny_llama

    wider = tmp_path / "wider-model"
    tiny_llama(intermediate_size=96).save_pretrained(wider)
    tiny_tokenizer().save_pretrained(wider)
    line = refused("run", "ft", "--load-state", finished_run / "state", "--data", data_file, model=wider)
    assert "FT state weight of model.layers." in line and "is (32, 64)" in line and "expected (32, 96)" in line


def test_starting_from_a_saved_state(capsys, tiny_model_dir, data_file, finished_run, tmp_path):
    """The good path of --load-state: the run starts from the saved edits and says so in config.json."""
    out = tmp_path / "continued"
    main(["run", "ft", "--load-state", str(finished_run / "state"), "--model", str(tiny_model_dir),
          "--data", str(data_file), "--out", str(out), "--no-progress"])  # fmt: skip
    started_from = json.loads((out / "config.json").read_text())["initial_state"]
    assert started_from["path"] == str(finished_run / "state")
    assert started_from["sha256"] == hashlib.sha256((finished_run / "state" / "state.safetensors").read_bytes()).hexdigest()
    assert json.loads((out / "state" / "state.json").read_text())["state"]["edits"] == 2 * len(GOOD)


# -------------------------------------------------------------------------------- results directories
@pytest.mark.parametrize("version", ["0.0.1", None])
def test_results_of_another_editkit_version(refused, data_file, finished_run, tmp_path, version):
    out = shutil.copytree(finished_run, tmp_path / "old")
    config = json.loads((out / "config.json").read_text())
    if version is None:
        del config["versions"]
    else:
        config["versions"]["editkit"] = version
    (out / "config.json").write_text(json.dumps(config))
    line = refused("run", "ft", "--data", data_file, out=out)
    expected = f"holds results of editkit {version}" if version else "cannot tell which editkit version wrote"
    assert expected in line and str(out / "config.json") in line
