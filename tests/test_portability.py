"""Portability questions loaded from the formats that carry them."""

import json
from pathlib import Path

import pytest

from editkit.data import load_requests
from editkit.errors import DataError
from editkit.evaluation.streams import make_stream
#: ../shared of the checkout (the main checkout sits beside it, a worktree one level further down)
SHARED_ZSRE = next(
    (p for p in (Path(__file__).resolve().parents[i] / "shared/data/zsre/zsre_mend_eval_portability_gpt4.json" for i in (2, 3)) if p.is_file()),
    Path("shared/data/zsre/zsre_mend_eval_portability_gpt4.json"),
)


@pytest.mark.skipif(not SHARED_ZSRE.is_file(), reason="shared ZsRE file not present")
def test_portability_loaded_from_the_zsre_file():
    requests = load_requests(SHARED_ZSRE)
    records = json.loads(SHARED_ZSRE.read_text(encoding="utf-8"))
    assert len(requests) == len(records) == 1037
    for request, record in zip(requests, records):
        assert request.portability == ((record["portability"]["New Question"], record["portability"]["New Answer"].strip()),)
    assert requests[0].portability == (
        ("What type of sports event is the IAAF Combined Events Challenge, which was established in 2006?", "Athletics"),
    )
    # the bundled streams are that file's records: the same questions, the same stream hash
    assert make_stream(load_requests("default"), 300).hash == make_stream(requests, 300).hash


def test_bundled_streams_carry_portability_for_every_request():
    for name in ("default", "zsre-dev"):
        assert all(len(r.portability) == 1 and all(r.portability[0]) for r in load_requests(name))


def test_portability_in_editkit_jsonl_and_its_errors(tmp_path):
    good = {"id": "a", "prompt": "p?", "target": "t", "portability": [{"prompt": "hop?", "answer": " x "}]}
    file = tmp_path / "edits.jsonl"
    file.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "prompt": "q?", "target": "u"}) + "\n")
    first, second = load_requests(file)
    assert first.portability == (("hop?", "x"),) and second.portability == ()
    assert first.to_json()["portability"] == [{"prompt": "hop?", "answer": "x"}]
    zsre = {"src": "q?", "alt": "a", "rephrase": "r?", "loc": "l", "loc_ans": "m", "portability": {"New Question": "hop?"}}
    bad = tmp_path / "zsre.json"
    bad.write_text(json.dumps([zsre]))
    with pytest.raises(DataError, match="portability.New Answer"):
        load_requests(bad)


def test_streams_without_portability_keep_their_hash():
    import hashlib

    from editkit import EditRequest
    from editkit.evaluation.streams import stream_hash

    plain = [EditRequest("0", "p", "t", locality=[("l", "a")])]
    before = hashlib.sha256(json.dumps(["0", "p", "t", [], [["l", "a"]], None]).encode() + b"\n").hexdigest()
    assert stream_hash(plain) == before  # the hash every earlier run of such a stream recorded
    assert stream_hash([EditRequest("0", "p", "t", locality=[("l", "a")], portability=[("hop", "x")])]) != before
