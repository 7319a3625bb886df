"""``--chat-template on``: every prompt a method edits with or a scorer reads goes through the template."""

import json
import shutil

import pytest
import yaml

from editkit import EditRequest
from editkit.batching import chat_prompt
from editkit.editor import Editor
from editkit.evaluation import Harness, Schedule, make_stream
from editkit.evaluation.streams import with_chat_template
from editkit.errors import EditkitError
from editkit.registry import get_editor_spec
from editkit.testing import tiny_model_and_tokenizer
from test_cli import assert_one_line_error, data_file, editkit, tiny_dir  # noqa: F401 (fixtures)
from test_easyedit import FIXTURES

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def templated_tokenizer():
    model, tok = tiny_model_and_tokenizer()
    tok.chat_template = TEMPLATE
    return model, tok


def stream_requests():
    return [
        EditRequest(
            str(i),
            f"Who made item {i}?",
            f"maker {i}",
            rephrases=(f"Item {i} was made by whom?",),
            locality=[(f"Fact {i} is", "true")],
            portability=[(f"Where does the maker of item {i} live?", "town")],
        )
        for i in range(3)
    ]


def recorded_prompts(monkeypatch, chat: bool) -> tuple[list[str], list[str]]:
    """Run ft on the stream (scorers tf, gen, wild) and return the prompts it edited with and the prompt
    part of every row any scorer (or the routing record) fed the model."""
    model, tok = templated_tokenizer()
    stream = make_stream(stream_requests())
    if chat:
        stream = with_chat_template(stream, tok, "tiny")
    scored: list[str] = []
    edited: list[str] = []

    def record(batch):
        for row in range(len(batch)):
            scored.append(tok.decode(batch.input_ids[row][batch.prompt_mask[row].cpu()].tolist()))

    original_logits, original_generate = Editor.logits, Editor.generate
    monkeypatch.setattr(Editor, "logits", lambda self, batch: (record(batch), original_logits(self, batch))[1])
    monkeypatch.setattr(Editor, "generate", lambda self, batch, n, **kw: (record(batch), original_generate(self, batch, n, **kw))[1])
    spec = get_editor_spec("ft")
    original_edit = spec.editor_class.edit
    monkeypatch.setattr(spec.editor_class, "edit", lambda self, request: (edited.append(request.prompt), original_edit(self, request))[1])
    harness = Harness(
        model=model,
        tokenizer=tok,
        stream=stream,
        schedule=Schedule.parse("final"),
        scorer_names=["tf", "gen", "wild"],
        model_info={"model_id": "tiny", "weights_sha256": "x", "dtype": "float32", "device": "cpu"},
        dataset_info={"name": "hand-made", "path": None, "sha256": None},
        batch_size=8,
        progress=False,
    )
    return edited, scored, harness


def test_chat_template_changes_every_edited_and_scored_prompt(monkeypatch, tmp_path):
    spec = get_editor_spec("ft")
    _, tok = templated_tokenizer()
    runs = {}
    for chat in (False, True):
        edited, scored, harness = recorded_prompts(monkeypatch, chat)
        harness.run(spec, spec.make_config(steps=1), tmp_path / str(chat))
        runs[chat] = (list(edited), list(scored))
        monkeypatch.undo()
    (edited_off, scored_off), (edited_on, scored_on) = runs[False], runs[True]
    assert edited_off and len(scored_off) > 20  # reliability, generalization, portability, locality, fluency, routing
    originals = {r.prompt for r in stream_requests()} | {q for r in stream_requests() for q in r.rephrases}
    assert set(edited_off) <= originals and not any("<|" in p for p in scored_off)
    # every prompt is the template of a plain one, for editing and for every scorer alike
    assert edited_on == [chat_prompt(tok, p) for p in edited_off]
    assert sorted(scored_on) == sorted(chat_prompt(tok, p) for p in scored_off)
    assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>\n") for p in scored_on + edited_on)


def test_templated_stream_is_another_stream_and_a_model_without_a_template_is_refused():
    model, tok = templated_tokenizer()
    plain = make_stream(stream_requests())
    chat = with_chat_template(plain, tok, "tiny")
    assert chat.hash != plain.hash and chat.order == "file+chat"
    assert chat.requests[0].target == plain.requests[0].target and chat.requests[0].locality[0][1] == "true"
    tok.chat_template = None
    with pytest.raises(EditkitError, match="model tiny has no chat template"):
        with_chat_template(plain, tok, "tiny")


@pytest.fixture(scope="module")
def template_dir(tiny_dir, tmp_path_factory):
    """The CLI tests' tiny model, its tokenizer saved with a chat template."""
    path = tmp_path_factory.mktemp("tiny-chat")
    shutil.copytree(tiny_dir, path, dirs_exist_ok=True)
    templated_tokenizer()[1].save_pretrained(path)
    return path


def test_cli_refuses_chat_template_on_a_model_without_one(tiny_dir, data_file, tmp_path):
    code, _, err = editkit("run", "none", "--model", tiny_dir, "--data", data_file, "--chat-template", "on", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "--chat-template on", "has no chat template")
    assert not (tmp_path / "o").exists()


def test_easyedit_use_chat_template_turns_it_on_and_the_flag_wins(template_dir, data_file, tmp_path):
    hparams = yaml.safe_load((FIXTURES / "memoir-tiny.yaml").read_text())
    hparams["use_chat_template"] = True
    file = tmp_path / "memoir-chat.yaml"
    file.write_text(yaml.safe_dump(hparams))
    common = ["--model", template_dir, "--data", data_file, "--num-edits", "2", "--scorers", "tf", "--no-progress", "--threads", "1"]
    code, out, err = editkit("run", "memoir", "--hparams", file, *common, "--out", tmp_path / "on")
    assert code == 0, err
    config = json.loads((tmp_path / "on" / "config.json").read_text())
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert config["chat_template"] is True and config["stream_order"] == "file+chat"
    assert all(r["chat_template"] is True for r in summary) and "chat template on" in out
    assert "use_chat_template" not in err  # read, not reported as unused
    code, out, err = editkit("run", "memoir", "--hparams", file, "--chat-template", "off", *common, "--out", tmp_path / "off")
    assert code == 0, err
    assert json.loads((tmp_path / "off" / "config.json").read_text())["chat_template"] is False
