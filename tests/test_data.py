"""Loaders: every format on good records, and a precise error (file, record, field) on each kind of bad one."""

import json
from pathlib import Path

import pytest

from editkit.data import DATA_NAMES, load_requests, parse_columns, resolve_source
from editkit.errors import DataError, EditkitError
from editkit.evaluation.streams import make_stream

SHARED_ZSRE = Path(__file__).resolve().parents[2] / "shared/data/zsre/zsre_mend_eval_portability_gpt4.json"

ZSRE = {
    "subject": "Foo", "src": "When was Foo founded?", "pred": "1990", "rephrase": "Foo was founded in which year?",
    "alt": " 2006 ", "answers": ["1998"], "loc": "nq question: who wrote x", "loc_ans": "Bar", "cond": "",
}
COUNTERFACT = {
    "case_id": 7, "prompt": "The mother tongue of A is", "target_new": "English", "ground_truth": "French",
    "subject": "A", "rephrase_prompt": "A speaks", "locality_prompt": "B is a native speaker of",
    "locality_ground_truth": "French",
}
QAEDIT = {
    "id": 3, "source": "NQ", "prompt": "who won?", "target": "Wilt ", "subject": "won",
    "rephrase": "which one won?", "locality": [{"loc": f"q{i}", "loc_ans": f"a{i}"} for i in range(5)],
}
EDITKIT = {"id": "r1", "prompt": "P", "target": "T", "rephrases": ["P2"], "locality": [{"prompt": "L", "answer": "A"}]}


def write_json(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def variants(record, key, n=3):
    return [{**record, key: f"{record[key]}{i}" if isinstance(record[key], str) else record[key] + i} for i in range(n)]


def test_zsre_mapping(tmp_path):
    path = write_json(tmp_path, variants(ZSRE, "src") + [{**ZSRE, "src": "other", "loc": "nq question: other"}])
    r = load_requests(path)[0]
    assert (r.id, r.prompt, r.target, r.rephrases) == ("0", "When was Foo founded?0", "2006", ("Foo was founded in which year?",))
    assert r.locality == (("nq question: who wrote x", "Bar"),)
    assert r.subject == "Foo" and r.meta["answers"] == ["1998"]


def test_counterfact_mapping(tmp_path):
    r = load_requests(write_json(tmp_path, variants(COUNTERFACT, "case_id")))[1]
    assert (r.id, r.target, r.rephrases, r.locality) == ("8", "English", ("A speaks",), (("B is a native speaker of", "French"),))
    assert r.meta["ground_truth"] == "French"


def test_qaedit_mapping(tmp_path):
    r = load_requests(write_json(tmp_path, variants(QAEDIT, "id")))[0]
    assert (r.id, r.target, len(r.locality)) == ("NQ-3", "Wilt", 5)


def test_editkit_jsonl_roundtrip(tmp_path):
    rows = [{**EDITKIT, "id": f"r{i}"} for i in range(3)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    requests = load_requests(path)
    again = tmp_path / "again.jsonl"
    again.write_text("".join(json.dumps(r.to_json()) + "\n" for r in requests))
    assert load_requests(again) == requests


def test_irrelevant_is_another_records_locality_and_deterministic(tmp_path):
    rows = [{**EDITKIT, "id": f"r{i}", "locality": [{"prompt": f"L{i}", "answer": f"A{i}"}]} for i in range(6)]
    path = write_json(tmp_path, rows)
    requests = load_requests(path)
    for r in requests:
        assert r.irrelevant and r.irrelevant != f"{r.locality[0][0]} {r.locality[0][1]}"
    assert requests[0].irrelevant == "L5 A5"  # taken from the far end of the file
    assert load_requests(path) == requests


def test_columns_spec_with_datasets_csv(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,para,lq,la\nWho?,Me,Who is it?,Where?,Here\nWhat?,That,What is it?,When?,Now\n")
    columns = parse_columns("prompt=question,target=answer,rephrases=para,locality_prompt=lq,locality_answer=la")
    requests = load_requests(path, columns=columns)
    assert [r.id for r in requests] == ["0", "1"]
    assert requests[1].locality == (("When?", "Now"),) and requests[1].rephrases == ("What is it?",)
    assert requests[0].irrelevant == "When? Now"


@pytest.mark.parametrize(
    "spec, needle",
    [("prompt=q", "no column given for target"), ("prompt=q,target=a,colour=c", "unknown field 'colour'"), ("prompt", "not FIELD=COLUMN")],
)
def test_bad_columns_spec(spec, needle):
    with pytest.raises(EditkitError, match=needle):
        parse_columns(spec)


@pytest.mark.parametrize(
    "records, needle",
    [
        ([ZSRE, {k: v for k, v in ZSRE.items() if k != "alt"}], "record 1, field 'alt': missing field"),
        ([COUNTERFACT, {**COUNTERFACT, "case_id": 8, "target_new": "  "}], "record 1, field 'target_new': is empty"),
        ([{**QAEDIT, "locality": [{"loc": "q"}]}], "record 0, field 'locality[0].loc_ans'"),
        ([{**EDITKIT, "prompt": 5}], "record 0, field 'prompt': expected a string"),
        ([EDITKIT, EDITKIT], "record 1, field 'id': id 'r1' already used by record 0"),
        ([{"question": "x"}], "record 0: unknown record layout"),
        ([EDITKIT, "not an object"], "record 1: expected an object"),
        ({"prompt": "x"}, "expected a JSON array"),
        ([], "holds no records"),
    ],
)
def test_malformed_records(tmp_path, records, needle):
    path = write_json(tmp_path, records)
    with pytest.raises(DataError) as info:
        load_requests(path)
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


def test_malformed_json_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(EDITKIT) + "\n{broken\n")
    with pytest.raises(DataError, match=r"d.jsonl, record 1: invalid JSON on line 2"):
        load_requests(path)
    bad = tmp_path / "d.json"
    bad.write_text("[{]")
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_requests(bad)


def test_non_utf8_and_missing_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_requests(path)
    with pytest.raises(DataError, match="no such file"):
        load_requests(tmp_path / "missing.json")


def test_bundled_streams():
    assert set(DATA_NAMES) == {"default", "zsre-dev"}
    default, dev = load_requests("default"), load_requests("zsre-dev")
    assert len(default) == 300 and len(dev) == 37
    assert default[0].id == "0" and dev[0].id == "1000"
    assert not {r.prompt for r in default} & {r.prompt for r in dev}
    assert resolve_source("default").name == "default.jsonl"


@pytest.mark.skipif(not SHARED_ZSRE.is_file(), reason="shared ZsRE file not present")
def test_bundled_default_equals_the_zsre_file_prefix():
    assert make_stream(load_requests("default"), 300).hash == make_stream(load_requests(SHARED_ZSRE), 300).hash


def test_contested_edits_of_the_bundled_streams_and_their_script(tmp_path):
    """The counts README quotes, and the script that prints them (with a run of another stream refused)."""
    import subprocess
    import sys

    from editkit.evaluation.streams import contested_edits

    assert len(contested_edits(load_requests("default"))) == 117
    assert len(contested_edits(load_requests("zsre-dev"))) == 8
    script = Path(__file__).resolve().parents[1] / "scripts" / "contested_edits.py"
    done = subprocess.run([sys.executable, str(script), "--data", "zsre-dev"], capture_output=True, text=True)
    assert done.returncode == 0 and "first 37 edits: 8 contested" in done.stdout, done.stdout
    run = tmp_path / "run"
    run.mkdir()
    row = {"method": "m", "step": 1, "metric": "reliability", "scorer": "tf", "mean": 1.0, "n": 1, "model": "x", "dataset": "d", "stream": "0" * 64, "schedule": "final"}
    (run / "summary.json").write_text(json.dumps([row]))
    done = subprocess.run([sys.executable, str(script), "--data", "zsre-dev", str(run)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not on this one" in done.stderr, done.stderr
