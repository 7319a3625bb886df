"""Nothing lost, nothing mixed (issue 19): every probe that once lost or silently mixed results, replayed.

Each test runs the probe as a user would and asserts the exit code, the one-line message and that every file
that existed before is byte-identical afterwards (:func:`snapshot`). Kills are real ``SIGKILL``s of a real
child process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import request_rows
from test_resume import KILLER  # the real command line, SIGKILLed after the KILL_AFTER-th edit row

from editkit.cli import main
from editkit.evaluation import store
from editkit.evaluation.rundir import MARKER
from editkit.evaluation.store import LOCK, RunLock
from editkit.evaluation.validation import check_config_values, value_range
from editkit.hashing import sha256_file

NUM_EDITS = 6

def snapshot(root: Path) -> dict[str, Any]:
    """Every entry below ``root`` (not following symlinks): a file's bytes, a symlink's target, a directory.
    The lock file a killed run left behind is not a result: any later command that locks the directory
    takes it over and removes it (store.RunLock)."""
    tree: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + [f for f in filenames if f != LOCK]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            tree[rel] = ("link", os.readlink(path)) if path.is_symlink() else ("dir",) if path.is_dir() else path.read_bytes()
    return tree


def refused(capsys: pytest.CaptureFixture, argv: list[str], *keep: Path) -> str:
    """Run ``editkit ARGV``; assert exit 2, one line on stderr and no traceback, every tree in ``keep``
    byte-identical; return the line."""
    before = [snapshot(k) if k.is_dir() else k.read_bytes() for k in keep]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    after = [snapshot(k) if k.is_dir() else k.read_bytes() for k in keep]
    changed = [sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if isinstance(a, dict) else a != b for a, b in zip(before, after)]
    assert after == before, f"a refused command changed files: {changed}"
    return lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "edits.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in request_rows(NUM_EDITS)))
    return path


def _run(out: Path, model: Path, data: Path, method: str = "ft", *extra: str) -> list[str]:
    return ["run", method, "--model", str(model), "--data", str(data), "--out", str(out), "--no-progress", "--threads", "1",
            "--schedule", "every:2", "--checkpoint-every", "1", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_file: Path) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    main(_run(out, tiny_model_dir, data_file))
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_file: Path) -> Path:
    """An FT run killed with SIGKILL after its 4th edit row (checkpoint at step 3, a torn row after it)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {**os.environ, "KILL_AFTER": "4", "OMP_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-c", KILLER, *_run(out, tiny_model_dir, data_file)], env=env, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 3
    return out


@pytest.fixture()
def copy(tmp_path: Path) -> Callable[[Path], Path]:
    def make(run: Path, name: str = "copy") -> Path:
        target = tmp_path / name
        shutil.copytree(run, target, symlinks=True)
        return target

    return make


# ----------------------------------------------------------------------------- 1. --overwrite owns only its files
def test_overwrite_refuses_a_foreign_file_and_removes_nothing(capsys, copy, finished, tiny_model_dir, data_file):
    out = copy(finished)
    (out / "notes.txt").write_text("mine")
    line = refused(capsys, _run(out, tiny_model_dir, data_file, "ft", "--overwrite"), out)
    assert "notes.txt" in line and "--overwrite" in line


def test_overwrite_refuses_nested_runs_and_unmarked_results(capsys, tmp_path, copy, finished, tiny_model_dir, data_file):
    parent = tmp_path / "parent"
    parent.mkdir()
    shutil.copytree(finished, parent / "inner")
    line = refused(capsys, _run(parent, tiny_model_dir, data_file, "ft", "--overwrite"), parent)
    assert "did not mark as its own run" in line and "inner" in line
    marked = copy(finished)
    shutil.copytree(finished, marked / "nested")  # a run inside a run: not the outer run's files
    line = refused(capsys, _run(marked, tiny_model_dir, data_file, "ft", "--overwrite"), marked)
    assert "nested" in line


def test_an_empty_out_is_an_error(capsys, monkeypatch, copy, finished, tiny_model_dir, data_file):
    here = copy(finished)
    monkeypatch.chdir(here)
    for option in ("--out", "--resume"):
        argv = ["run", "ft", "--model", tiny_model_dir, "--data", data_file, option, "", "--overwrite"]
        assert "is empty" in refused(capsys, argv if option == "--out" else ["run", "--resume", ""], here)


def test_overwrite_clears_the_previous_runs_state_and_checkpoints(copy, killed, tiny_model_dir, data_file):
    out = copy(killed)
    assert (out / "checkpoints").is_dir()
    main(_run(out, tiny_model_dir, data_file, "none", "--overwrite"))
    assert not (out / "checkpoints").exists()
    assert json.loads((out / "state" / "state.json").read_text())["editor"] == "none"
    assert {json.loads(line)["method"] for line in (out / "results.jsonl").read_text().splitlines()} == {"none"}
    owned = json.loads((out / MARKER).read_text())["owned"]
    assert "invocation.json" in owned and "results.jsonl" in owned


def test_out_through_a_missing_directory_leaves_no_stray_one(tmp_path, monkeypatch, tiny_model_dir, data_file):
    monkeypatch.chdir(tmp_path)
    main(_run(Path("a/missing/../run"), tiny_model_dir, data_file, "none"))
    assert (tmp_path / "a" / "run" / "summary.json").is_file() and not (tmp_path / "a" / "missing").exists()


# ------------------------------------------------------------------ 2. values checked before anything is removed
@pytest.mark.parametrize("extra, needle", [(("--seed", str(10**23)), "--seed"), (("--set", "lr=1e300"), "lr must be at most 1.0")])
def test_bad_values_are_refused_before_overwrite_deletes(capsys, copy, finished, tiny_model_dir, data_file, extra, needle):
    out = copy(finished)
    assert needle in refused(capsys, _run(out, tiny_model_dir, data_file, "ft", "--overwrite", *extra), out)


def test_every_numeric_config_field_is_finite_and_in_its_declared_range():
    from dataclasses import dataclass, field

    @dataclass
    class Config:
        rates: tuple = (0.1, float("inf"))
        lr: float = field(default=2.0, metadata=value_range(0.0, 1.0))

    with pytest.raises(Exception, match=r"rates\[1\] must be a finite number"):
        check_config_values("m", Config())
    with pytest.raises(Exception, match="lr must be from 0.0 to 1.0"):
        check_config_values("m", Config(rates=(0.1,)))
    check_config_values("m", Config(rates=(0.1,), lr=0.5))


# ------------------------------------------------------------------------- 3. --resume checks what it continues
def test_resume_refuses_a_changed_dataset(capsys, copy, killed, data_file, tmp_path):
    out = copy(killed)
    rows = request_rows(NUM_EDITS + 6)
    data = Path(json.loads((out / "config.json").read_text())["dataset"]["path"])
    original = data.read_bytes()
    try:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # appended: the 6-edit run would become 12
        line = refused(capsys, ["run", "--resume", out], out)
        assert "dataset file changed" in line
        edited = request_rows(NUM_EDITS)
        edited[0]["target"] = "someone else"
        data.write_text("".join(json.dumps(r) + "\n" for r in edited))
        assert "dataset file changed" in refused(capsys, ["run", "--resume", out], out)
    finally:
        data.write_bytes(original)


def test_resume_refuses_replaced_weights(capsys, copy, killed, tiny_model_dir, tmp_path):
    from editkit.testing import tiny_model_and_tokenizer

    out = copy(killed)
    model_dir = Path(json.loads((out / "config.json").read_text())["model"]["model_id"])
    saved = tmp_path / "saved-weights"
    shutil.copytree(model_dir, saved)
    try:
        model, _ = tiny_model_and_tokenizer(seed=1)  # re-saved, other weights
        model.save_pretrained(model_dir)
        assert "model's weights changed" in refused(capsys, ["run", "--resume", out], out)
    finally:
        shutil.rmtree(model_dir)
        shutil.copytree(saved, model_dir)


def test_a_stale_manifest_is_not_the_weights_hash(tmp_path, tiny_model_dir, data_file):
    from editkit.hashing import weights_fingerprint
    from editkit.testing import tiny_model_and_tokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    # the manifest of a conversion, copied along with the model directory (its fingerprint still matches)
    manifest = {"weights_sha256": sha256_file(model / "model.safetensors"), "weights_files": weights_fingerprint(model)}
    (model / "editkit.json").write_text(json.dumps(manifest))
    tiny_model_and_tokenizer(seed=1)[0].save_pretrained(model)  # then the weights are re-saved
    out = tmp_path / "out"
    main(["run", "none", "--model", str(model), "--data", str(data_file), "--num-edits", "1", "--out", str(out), "--no-progress"])
    recorded = json.loads((out / "config.json").read_text())["model"]["weights_sha256"]
    assert recorded == sha256_file(model / "model.safetensors") != manifest["weights_sha256"]


# ------------------------------------------------------------------- 4. checkpoints and rows verified on resume
def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _halve(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


DAMAGE = {
    "flipped state byte": (lambda out: _flip_byte(out / "checkpoints" / "step-3" / "state.safetensors"), "checkpoint is damaged"),
    "results halved": (lambda out: _halve(out / "results.jsonl"), "results.jsonl"),
    "results deleted": (lambda out: (out / "results.jsonl").unlink(), "results.jsonl: is missing"),
    "edits deleted": (lambda out: (out / "edits.jsonl").unlink(), "edits.jsonl: is missing"),
    "a row changed": (lambda out: _flip_byte(out / "edits.jsonl"), "edits.jsonl"),
    "garbage after the checkpoint": (lambda out: (out / "timings.jsonl").open("a").write("garbage\n{}\n"), "after the checkpoint"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_refuses_a_damaged_checkpoint_or_rows(capsys, copy, killed, damage):
    out = copy(killed)
    apply, needle = DAMAGE[damage]
    apply(out)
    assert needle in refused(capsys, ["run", "--resume", out], out)


@pytest.mark.parametrize("step", [-3, 0, 6, 8, 99999])
def test_a_checkpoint_step_must_lie_in_the_stream(capsys, copy, killed, step):
    out = copy(killed)
    file = out / "checkpoint.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "step": step}))
    line = refused(capsys, ["run", "--resume", out], out)
    assert "not a checkpoint of this run's stream" in line or "names the state" in line


@pytest.mark.parametrize("damage", ["results halved", "results deleted", "edits deleted"])
def test_a_finished_run_with_lost_rows_is_not_complete(capsys, copy, finished, damage):
    out = copy(finished)
    DAMAGE[damage][0](out)
    assert DAMAGE[damage][1].split(":")[0] in refused(capsys, ["run", "--resume", out], out)


def test_a_torn_last_line_after_the_checkpoint_is_tolerated(copy, killed, finished):
    out = copy(killed)
    main(["run", "--resume", str(out)])
    for name in ("results.jsonl", "summary.json"):
        assert (out / name).read_bytes() == (finished / name).read_bytes()


# ---------------------------------------------------------------------------------- 5. no symlinks in a run
def test_a_symlinked_method_directory_is_refused(capsys, tmp_path, tiny_model_dir, data_file):
    old = tmp_path / "old"
    main(["compare", "--methods", "ft", "--model", str(tiny_model_dir), "--data", str(data_file), "--num-edits", "2", "--out", str(old), "--no-progress"])
    new = tmp_path / "new"
    new.mkdir()
    (new / "ft").symlink_to(old / "ft")
    argv = ["compare", "--methods", "ft", "--model", tiny_model_dir, "--data", data_file, "--num-edits", "2", "--out", new, "--no-progress"]
    assert "is a symlink" in refused(capsys, argv, old, new)
    assert "is a symlink" in refused(capsys, [*argv, "--overwrite"], old, new)
    resumed = tmp_path / "resumed"
    shutil.copytree(old, resumed)
    shutil.rmtree(resumed / "ft")
    (resumed / "ft").symlink_to(old / "ft")
    assert "is a symlink" in refused(capsys, ["compare", "--resume", resumed], old, resumed)


# ------------------------------------------------------------------------------------------ 6. bounded reads
def test_data_that_is_not_a_regular_file(capsys, tmp_path, finished, tiny_model_dir, copy):
    out = copy(finished)
    fifo = tmp_path / "edits.jsonl"
    os.mkfifo(fifo)
    for data, kind in (("/dev/zero", "a device"), (fifo, "a FIFO")):
        line = refused(capsys, ["run", "ft", "--model", tiny_model_dir, "--data", data, "--out", out, "--overwrite"], out)
        assert f"is {kind}, not a regular file" in line


def test_hparams_alias_bomb_and_fifo(capsys, tmp_path, finished, tiny_model_dir, data_file, copy):
    out = copy(finished)
    bomb = tmp_path / "bomb.yaml"
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg")]
    bomb.write_text("alg_name: FT\n" + "\n".join(levels) + "\n")
    assert bomb.stat().st_size < 400
    line = refused(capsys, ["run", "ft", "--hparams", bomb, "--model", tiny_model_dir, "--data", data_file, "--out", out, "--overwrite"], out)
    assert "YAML values" in line and len(line) < 300
    fifo = tmp_path / "hparams.yaml"
    os.mkfifo(fifo)
    line = refused(capsys, ["run", "ft", "--hparams", fifo, "--model", tiny_model_dir, "--data", data_file, "--out", out, "--overwrite"], out)
    assert "is a FIFO" in line


# ------------------------------------------------------------------ 8. storage errors and malformed run files
def test_out_below_a_file(capsys, tmp_path, tiny_model_dir, data_file):
    (tmp_path / "FILE").write_text("x")
    line = refused(capsys, _run(tmp_path / "FILE" / "sub", tiny_model_dir, data_file, "none"), tmp_path)
    assert "--out" in line and "Not a directory" in line or "not a directory" in line


@pytest.fixture()
def tmpfs(tmp_path: Path):
    """A tiny tmpfs of its own (needs root); ``remount(ro=True)`` makes it read-only."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")

    def remount(ro: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if ro else 'rw'}", str(mount)], check=True)

    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)])


def test_a_full_disk_is_one_line_and_resumable(capsys, tmpfs, finished, tiny_model_dir, data_file):
    mount, _ = tmpfs
    out = mount / "run"
    (mount / "filler").write_bytes(b"\0" * (200 * 1024))  # ~56 KiB left: the run fills them mid-stream
    before = {}
    with pytest.raises(SystemExit) as info:
        main(_run(out, tiny_model_dir, data_file))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    (mount / "filler").unlink()
    before = snapshot(out)
    main(["run", "--resume", str(out)])  # the rows written before the disk filled are kept and continued
    for name in ("results.jsonl", "summary.json"):
        assert (out / name).read_bytes() == (finished / name).read_bytes()
    assert before  # something had been written


def test_a_read_only_out_is_one_line(capsys, tmpfs, finished, tiny_model_dir, data_file):
    mount, remount = tmpfs
    out = mount / "run"
    main(_run(out, tiny_model_dir, data_file, "none"))
    remount(ro=True)
    try:
        assert "Read-only file system" in refused(capsys, ["run", "--resume", out], out)  # even a finished run
        assert "Read-only file system" in refused(capsys, [*_run(out, tiny_model_dir, data_file, "none"), "--overwrite"], out)
    finally:
        remount(ro=False)


def test_a_full_disk_simulated(capsys, monkeypatch, tmp_path, tiny_model_dir, data_file):
    """The same without a tmpfs (no root): the third row write fails with ENOSPC, patched in-process."""
    calls = []
    original = store._RowFile.write

    def write(self, rows, sync=False):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, rows, sync)

    monkeypatch.setattr(store._RowFile, "write", write)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(_run(out, tiny_model_dir, data_file))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0], err


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda inv: inv["params"].pop("seed"), "holds no value for --seed"),
        (lambda inv: inv["params"].update(seed="many"), "--seed"),
        (lambda inv: inv["params"].update(overrides="lr=1"), "--set"),
        (lambda inv: inv.update(params=[1, 2]), "not an invocation editkit wrote"),
    ],
)
def test_a_malformed_invocation_is_one_line(capsys, copy, killed, change, needle):
    out = copy(killed)
    invocation = json.loads((out / "invocation.json").read_text())
    change(invocation)
    (out / "invocation.json").write_text(json.dumps(invocation))
    assert needle in refused(capsys, ["run", "--resume", out], out)


@pytest.mark.parametrize("state", [[1, 2], "deep"])
def test_a_malformed_state_json_is_one_line(capsys, copy, finished, tiny_model_dir, data_file, tmp_path, state):
    saved = copy(finished, "saved") / "state"
    meta = saved / "state.json"
    if state == "deep":
        meta.write_text('{"editor": "ft", "state": ' + "[" * 200_000 + "]" * 200_000 + "}")
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "state": state}))
    out = tmp_path / "out"
    line = refused(capsys, ["run", "ft", "--model", tiny_model_dir, "--data", data_file, "--load-state", saved, "--out", out], saved)
    assert "state.json: corrupted editor state" in line and not out.exists()


# ----------------------------------------------------------------------------------------------- 9. small ones
def test_an_over_long_target_names_the_target(capsys, tmp_path, tiny_model_dir):
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Who?", "target": "x" * (context + 5)}) + "\n")
    line = refused(capsys, ["run", "none", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "out"], tmp_path)
    assert "field 'target'" in line


def test_resume_refusal_names_the_real_options(capsys, copy, killed):
    out = copy(killed)
    line = refused(capsys, ["run", "--resume", out, "--report", "--no-progress"], out)
    assert "--report" in line and "--progress/--no-progress" in line and "--with-report" not in line


def test_the_lock_refusal_names_resume(capsys, copy, killed):
    out = copy(killed)
    lock = RunLock(out).acquire()
    try:
        before = snapshot(out)
        with pytest.raises(SystemExit):
            main(["run", "--resume", str(out)])
        line = capsys.readouterr().err.strip()
        assert line.startswith("editkit: error: --resume ") and "in use by a running editkit" in line
        assert snapshot(out) == before
    finally:
        lock.release()
    assert not (out / LOCK).exists()


def test_a_forged_marker_cannot_reach_out_of_the_run(capsys, copy, finished, tiny_model_dir, data_file, tmp_path):
    out = copy(finished)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    marker = out / MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "owned": ["../precious.txt"]}))
    assert "not a run marker editkit wrote" in refused(capsys, _run(out, tiny_model_dir, data_file, "none", "--overwrite"), out, outside)


def test_overwrite_after_a_report(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "out"
    main(_run(out, tiny_model_dir, data_file, "none", "--report", "--num-edits", "2"))
    assert (out / "report" / "table.md").is_file()
    main(_run(out, tiny_model_dir, data_file, "none", "--overwrite", "--num-edits", "2"))
    assert not (out / "report").exists() and (out / "summary.json").is_file()
