"""ROME, MEMIT and AlphaEdit beyond the conformance suite: subjects, the update rules' algebra, the cached
second moments, batch edits through the harness and the command line, EasyEdit files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import request_rows

from editkit import EditRequest
from editkit.easyedit import config_overrides, read_hparams
from editkit.errors import EditkitError
from editkit.evaluation.schedules import Schedule
from editkit.locate import second_moments
from editkit.locate.stats import model_fingerprint
from editkit.locate.values import read_at_subject
from editkit.registry import get_editor_spec
from editkit.testing.plugin import EDIT_REQUESTS
from editkit.testing import tiny_model_and_tokenizer

FAST = {"mom2_samples": 8, "v_num_grad_steps": 4, "context_template_length_params": [[3, 2]]}
METHODS = ("rome", "memit", "alphaedit")


def build(name: str, **overrides):
    model, tok = tiny_model_and_tokenizer()
    spec = get_editor_spec(name)
    return spec.build(model, tok, spec.make_config(**{**FAST, **overrides}))


# ------------------------------------------------------------------------------------------ subjects
@pytest.mark.parametrize("name", METHODS)
def test_stream_without_subjects_is_refused_naming_the_record(name):
    editor = build(name)
    no_subject = EditRequest(id="r7", prompt="Who made item 7?", target="maker 7")
    with pytest.raises(EditkitError, match="edit request r7: .*subject"):
        editor.check_requests([EDIT_REQUESTS[0], no_subject])
    elsewhere = EditRequest(id="r8", prompt="Who made item 8?", target="maker", subject="Item 8")
    with pytest.raises(EditkitError, match="edit request r8: subject 'Item 8' does not occur"):
        editor.check_requests([elsewhere])
    editor.check_requests(EDIT_REQUESTS)


def editkit_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "editkit.cli", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_refuses_a_stream_without_subjects_before_writing(tiny_model_dir, tmp_path):
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in request_rows(3)))
    code, _, err = editkit_cli("run", "rome", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o", "--threads", "1")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "'r0'" in lines[0] and "subject" in lines[0], err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ the update rules
def test_rome_writes_v_star_at_the_plain_prompt_with_a_rank_one_update():
    editor = build("rome")
    (path,) = editor.weight_paths
    before = editor.weight_matrix(path).clone()
    request = EDIT_REQUESTS[0]
    values: list[torch.Tensor] = []
    update = editor.update
    editor.update = lambda requests, v: (values.append(v), update(requests, v))  # type: ignore[method-assign]
    editor.edit(request)
    delta = (editor.weight_matrix(path) - before).double()
    assert torch.linalg.matrix_rank(delta, rtol=1e-6) == 1
    out = read_at_subject(editor.model, editor.tokenizer, [request.prompt], [request.subject], [path], "output")[path][0]
    torch.testing.assert_close(out, values[0][0], atol=1e-4, rtol=1e-4)


def test_memit_edits_a_batch_jointly_and_alphaedit_stays_in_the_null_space():
    memit = build("memit")
    stats = memit.edit_batch(EDIT_REQUESTS)
    assert [s["batch"] for s in stats] == [3, 3, 3] and memit.num_edits == 3 and memit.batch_edits

    alpha = build("alphaedit")
    before = {p: alpha.weight_matrix(p).clone() for p in alpha.weight_paths}
    alpha.edit_batch(EDIT_REQUESTS[:2])
    for path in alpha.weight_paths:
        delta = (alpha.weight_matrix(path) - before[path]).double()
        assert delta.abs().max() > 0
        preserved = torch.eye(delta.shape[1], dtype=torch.float64) - alpha.projections[path]
        assert (delta @ preserved).abs().max() <= 1e-4 * delta.abs().max()  # generic keys' outputs kept
    grown = {p: k.clone() for p, k in alpha.edited_keys.items()}
    assert all(k.abs().sum() > 0 for k in grown.values())
    alpha.reset()
    assert all(k.abs().sum() == 0 for k in alpha.edited_keys.values())


@pytest.mark.parametrize("name", ["rome", "memit"])
def test_fast_value_loop_gives_the_full_forwards_v_star(name):
    """v* through the split forward (blocks up to the value's point once, then only the blocks above) is
    the full forward's v*, and the edit records which loop it ran."""
    fast, full = build(name), build(name)
    full.value_loop.fast_path.fall_back("the reference in a test")
    values: dict[str, list[torch.Tensor]] = {"fast": [], "full": []}
    for key, editor in (("fast", fast), ("full", full)):
        update = editor.update
        editor.update = lambda requests, v, _u=update, _k=key: (values[_k].append(v), _u(requests, v))  # type: ignore[method-assign]
    for request in EDIT_REQUESTS[:2]:
        assert fast.edit(request)["loop"] == "padded" and full.edit(request)["loop"] == "full"
    for a, b in zip(values["fast"], values["full"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert fast.value_loop.at_block == (name == "memit")  # MEMIT's v* sits on the residual stream


# -------------------------------------------------------------------------------- second moments cache
def test_second_moments_are_computed_once_and_keyed_by_sample_count(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDITKIT_STATS_CACHE", str(tmp_path))
    model, tok = tiny_model_and_tokenizer()
    path = "model.layers.1.mlp.down_proj"
    fingerprint = model_fingerprint(model)
    first = second_moments(model, tok, [path], 4, fingerprint, progress=False)[path]
    assert "second moments of 1 module(s) over 4 generated texts" in capsys.readouterr().err
    again = second_moments(model, tok, [path], 4, fingerprint, progress=False)[path]
    assert capsys.readouterr().err == ""  # read from the cache
    assert torch.equal(first, again) and first.shape == (64, 64) and torch.allclose(first, first.T)
    assert torch.linalg.eigvalsh(first.double()).min() > -1e-6
    info = json.loads(next(tmp_path.rglob(f"{path}.json")).read_text())
    assert info["samples"] == 4 and info["tokens"] > 4 and info["seconds"] >= 0 and "peak_memory_mb" in info
    other = second_moments(model, tok, [path], 5, fingerprint, progress=False)[path]
    assert "over 5 generated texts" in capsys.readouterr().err and not torch.equal(first, other)


# ------------------------------------------------------------------------------------- batch schedules
def test_edits_per_step_is_part_of_the_schedule():
    schedule = Schedule.parse("every:4", per_step=2)
    assert str(schedule) == "every:4,edits-per-step:2" and Schedule.parse(str(schedule)) == schedule
    assert [list(s) for s in schedule.steps(5)] == [[0, 1], [2, 3], [4]]
    assert [cp.step for cp in Schedule.parse("immediate", per_step=2).plan(5)] == [2, 4, 5]
    assert str(Schedule.parse("final")) == "final"
    with pytest.raises(EditkitError, match="multiple of --edits-per-step 2"):
        Schedule.parse("every:3", per_step=2)


def test_cli_edits_per_step_recorded_and_said_for_methods_that_cannot_batch(tiny_model_dir, tmp_path):
    data = tmp_path / "edits.jsonl"
    rows = [{**r, "prompt": f"Item {i} was made by", "subject": f"Item {i}"} for i, r in enumerate(request_rows(4))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [f"--set=memit.{k}={json.dumps(v)}" for k, v in FAST.items()]
    code, out, err = editkit_cli(
        "compare", "--methods", "memit,ft", *sets, "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o",
        "--edits-per-step", "2", "--threads", "1", "--no-progress", "--scorers", "tf",
    )
    assert code == 0, err
    assert "ft has no batch edit; each step of 2 requests is applied one by one" in err
    assert "memit has no batch edit" not in err
    config = json.loads((tmp_path / "o" / "memit" / "config.json").read_text())
    assert config["edits_per_step"] == 2 and config["schedule"] == "final,edits-per-step:2" and config["batch_edits"]
    edits = [json.loads(line) for line in (tmp_path / "o" / "memit" / "edits.jsonl").read_text().splitlines()]
    assert len(edits) == 4 and all(e["batch"] == 2 for e in edits)
    assert "final,edits-per-step:2" in out


# ----------------------------------------------------------------------------------------- EasyEdit
def test_easyedit_alphaedit_file():
    spec = get_editor_spec("alphaedit")
    file = Path(__file__).parent / "fixtures" / "easyedit" / "alphaedit-tiny.yaml"
    values, unused = config_overrides(spec.editor_class.config_class, read_hparams(file), file.name, "alphaedit")
    config = spec.make_config(**values)
    assert config.layers == [1, 2] and config.nullspace_threshold == 2e-2 and config.L2 == 10 and config.v_num_grad_steps == 3
    assert config.module_template == "model.layers.{}.mlp.down_proj"
    assert {"mom2_n_samples", "mom2_dataset", "v_loss_layer", "P_loc"} <= set(unused)
    with pytest.raises(EditkitError, match="alg_name 'ROME'"):
        config_overrides(spec.editor_class.config_class, {"alg_name": "ROME"}, "x.yaml", "alphaedit")
    with pytest.raises(EditkitError, match="ROME edits one layer"):
        get_editor_spec("rome").make_config(layers=[1, 2])
