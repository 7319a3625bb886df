"""The main job as a user runs it: `editkit compare` on the embedded default model and the bundled stream."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_compare_on_the_default_model(default_model_cache, tmp_path):
    out = tmp_path / "cmp"
    env = {**os.environ, "EDITKIT_CACHE": str(default_model_cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "editkit.cli", "compare", "--methods", "ft", "--num-edits", "6", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| none" in proc.stdout and "| ft" in proc.stdout
    rows = {(r["method"], r["scorer"], r["metric"]): r["mean"] for r in json.loads((out / "summary.json").read_text())}
    for scorer in ("tf", "gen"):
        # the unedited model scored against its own cached predictions: exactly 1, not 0.9999
        assert rows[("none", scorer, "locality")] == 1.0
    # the model does not already know the new targets, and fine-tuning writes them
    assert rows[("none", "tf", "reliability")] < 0.6
    assert rows[("ft", "tf", "reliability")] > rows[("none", "tf", "reliability")] + 0.2
    config = json.loads((out / "ft" / "config.json").read_text())
    assert config["model"]["weights_sha256"] and config["dataset"]["name"] == "default"
    assert (out / "ft" / "state" / "state.safetensors").is_file()


BUILT_IN_EDITORS = ("ft", "grace", "memoir", "wise")


@pytest.fixture(scope="module")
def default_model(default_model_cache):
    from editkit.models import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDITKIT_CACHE", str(default_model_cache))
        return load_model(None)


@pytest.mark.slow
@pytest.mark.parametrize("method", BUILT_IN_EDITORS)
def test_one_edit_makes_the_target_the_greedy_continuation(method, default_model):
    """The conformance suite's "one edit → the target is what the model now says", on the fixture where it
    is reachable: the real default model (the tiny random models' logits are too decisive for one edit
    with a method's default hyper-parameters to overturn). ZsRE record 1 has a 3-token target that the
    unedited model does not produce; each method edits it with its default config."""
    from editkit.batching import encode, tokenize_pair
    from editkit.data import load_requests
    from editkit.registry import get_editor_spec

    requests = load_requests("default")
    request = requests[1]
    model, tokenizer = default_model.model, default_model.tokenizer
    target = tokenize_pair(tokenizer, request.prompt, request.target)[1]
    prompt = encode(tokenizer, [request.prompt], None, "left")
    spec = get_editor_spec(method)
    editor = spec.build(model, tokenizer, spec.make_config())
    editor.prepare([r.irrelevant for r in requests[:100] if r.irrelevant])
    try:
        assert editor.generate(prompt, len(target))[0].tolist() != target
        editor.edit(request)
        assert editor.generate(prompt, len(target))[0].tolist() == target, f"{method} did not write {request.target!r}"
    finally:
        editor.reset()
