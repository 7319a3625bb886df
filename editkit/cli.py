"""``editkit``: compare, run, report, methods.

Every user mistake surfaces as one line on stderr and exit code 2 (:class:`EditkitError`); input is read and
validated before anything is written, and results are appended as they are produced.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import click

from .errors import EditkitError
from .evaluation.rundir import RunDirectory
from .hashing import sha256_file

DEFAULT_DATA = "default"
DEFAULT_NUM_EDITS = 50


def _common_options(func):
    """The options ``compare`` and ``run`` share (docs/design.md, "Protocol")."""
    options = [
        click.option("--data", default=DEFAULT_DATA, show_default=True, help="A bundled stream (default: ZsRE records 0-299; zsre-dev: the tuning slice) or the path of a dataset file or directory (see README, datasets)."),
        click.option("--columns", default=None, help="Column spec for other datasets, e.g. 'prompt=question,target=answer'."),
        click.option("--num-edits", type=int, default=None, help=f"Length of the stream [default: {DEFAULT_NUM_EDITS} for the bundled stream, else the whole file]."),
        click.option("--start", type=int, default=0, show_default=True, help="Skip this many requests first (e.g. a held-out slice)."),
        click.option("--shuffle/--no-shuffle", default=False, show_default=True, help="Take the first N of a --seed shuffle instead of file order."),
        click.option("--schedule", default="final", show_default=True, help="final | immediate | every:K | every:K,sample:S (score S evenly spaced requests)"),
        click.option("--edits-per-step", type=int, default=1, show_default=True, help="Requests applied together in one edit step (Editor.edit_batch); part of the schedule."),
        click.option("--scorers", default="tf,gen", show_default=True, help="Comma list of tf, gen."),
        click.option("--model", default=None, help="HF model id or local path [default: the embedded SmolLM2-135M-Instruct]."),
        click.option("--device", default="auto", show_default=True, help="auto (cuda when there is one, else cpu) | cpu | cuda | cuda:N | mps"),
        click.option("--device-map", default=None, help="auto | balanced | sequential: spread a model that does not fit one device over all of them (accelerate)."),
        click.option("--dtype", default="float32", show_default=True, help="float32 | bfloat16 | float16"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=int, default=None, help="CPU threads for torch [default: torch's choice]; 1 when other jobs share the cores."),
        click.option("--batch-size", type=int, default=16, show_default=True, help="Scoring batch size."),
        click.option("--out", type=RunDirectory(), default=None, help="Run directory [default: runs/<command>-<time>]."),
        click.option("--overwrite", is_flag=True, help="Replace the results already in --out."),
        click.option("--resume", type=RunDirectory(), default=None, help="Continue the killed or interrupted run in this directory, with its own options (give no others)."),
        click.option("--checkpoint-every", type=int, default=10, show_default=True, help="Edits between two saved editor states (also saved at every scoring step), for --resume."),
        click.option("--progress/--no-progress", default=True, show_default=True),
        click.option("--report", "with_report", is_flag=True, help="Render the report (tables and figures) into OUT/report at the end."),
        click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code from its repository (off unless asked)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass
class Prepared:
    harness: Any
    out: Path
    lock: Any  # the output directory's RunLock, held until the command ends


def _prepare(
    command: str, opts: dict[str, Any], runs: Sequence[tuple[Any, Any]], invocation: dict[str, Any], initial_state: Path | None = None
) -> Prepared:
    """Validate every input (data, schedule, scorers, model, each method's config and the state to start
    from against the model) before the output directory is touched, so a mistake never leaves a
    half-written run behind."""
    import transformers

    from editkit.data import load_requests, parse_columns, resolve_source
    from editkit.evaluation.harness import Harness
    from editkit.evaluation.schedules import Schedule
    from editkit.evaluation.scorers import parse_scorers
    from editkit.evaluation.checkpoints import open_run_to_resume
    from editkit.evaluation.store import prepare_output_dir
    from editkit.evaluation.validation import check_config_values, check_seed
    from editkit.evaluation.streams import check_fits_model, make_stream
    from editkit.models import context_length, load_model

    check_seed(opts["seed"])
    schedule = Schedule.parse(opts["schedule"], per_step=opts.get("edits_per_step", 1))
    scorers = parse_scorers(opts["scorers"])
    if opts["threads"] is not None:
        if opts["threads"] < 1:
            raise EditkitError(f"--threads must be at least 1, got {opts['threads']}")
        import torch

        torch.set_num_threads(opts["threads"])
    if opts["batch_size"] < 1:
        raise EditkitError(f"--batch-size must be at least 1, got {opts['batch_size']}")
    if opts["checkpoint_every"] < 1:
        raise EditkitError(f"--checkpoint-every must be at least 1, got {opts['checkpoint_every']}")
    columns = parse_columns(opts["columns"]) if opts["columns"] else None
    requests = load_requests(opts["data"], columns=columns)
    num_edits = opts["num_edits"]
    if num_edits is None and opts["data"] == DEFAULT_DATA:
        num_edits = min(DEFAULT_NUM_EDITS, len(requests))
    stream = make_stream(requests, num_edits, opts["seed"] if opts["shuffle"] else None, opts["start"])
    source = resolve_source(opts["data"])
    dataset_info = {"name": opts["data"], "path": str(source), "sha256": sha256_file(source) if source.is_file() else None}
    transformers.utils.logging.disable_progress_bar()
    loaded = load_model(
        opts["model"], device=opts["device"], dtype=opts["dtype"], trust_remote_code=opts["trust_remote_code"],
        device_map=opts.get("device_map"),
    )  # fmt: skip
    check_fits_model(stream, requests, loaded.tokenizer, context_length(loaded.model), source)
    for spec, config in runs:
        check_config_values(spec.name, config)
        spec.check_requests(stream.requests)  # fields the method needs, e.g. a subject
        editor = spec.build(loaded.model, loaded.tokenizer, config)  # e.g. a layer path that does not exist
        editor.check_requests(stream.requests)  # e.g. a record without the subject the method needs
        if initial_state is not None:
            editor.load_state(initial_state)  # a corrupted state, or one of another model or config
            editor.reset()
    model_info = {
        "model_id": loaded.model_id,
        "weights_sha256": loaded.weights_sha256,
        "dtype": loaded.dtype,
        "device": loaded.device,
        **({"device_map": loaded.device_map} if loaded.device_map else {}),
    }
    harness = Harness(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        stream=stream,
        schedule=schedule,
        scorer_names=scorers,
        model_info=model_info,
        dataset_info=dataset_info,
        seed=opts["seed"],
        batch_size=opts["batch_size"],
        progress=opts["progress"],
        initial_state=initial_state,
        checkpoint_every=opts["checkpoint_every"],
    )
    if opts["resume"] is not None:
        lock = open_run_to_resume(opts["resume"], harness, runs, nested=command == "compare")
        return Prepared(harness, lock.directory, lock)
    out = opts["out"] or Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    lock = prepare_output_dir(out, opts["overwrite"], invocation)
    return Prepared(harness, lock.directory, lock)


def _invocation(ctx: click.Context, command: str) -> dict[str, Any]:
    """The command and every option of this call, as JSON, so ``--resume`` can repeat it exactly."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    # relative paths (--data, --model, ...) are kept as given, so every record of the run stays the same on
    # resume; the working directory they are relative to is kept with them
    return {"command": command, "cwd": os.getcwd(), "params": {k: plain(v) for k, v in ctx.params.items()}}


def _resumed(ctx: click.Context, command: str) -> dict[str, Any] | None:
    """The options of the run ``--resume DIR`` continues (None without ``--resume``)."""
    from editkit.evaluation.rundir import resumed_params

    return resumed_params(ctx, command)


def _finisher(with_report: bool) -> Any:
    """What prints the table (and renders the report) at the end of a run, imported now, at the start: a
    run takes hours, and code installed in between (an upgrade, an editable checkout that moved on) must not
    break its last step after every result is written."""
    from dataclasses import asdict

    from editkit.reports.tables import render_table

    build = None
    if with_report:
        from editkit.reports.report import REPORT_DIR, build_report, write_report

        def build(out: Path) -> None:
            built = write_report(build_report([out]), out / REPORT_DIR)
            click.echo(f"report: {out / REPORT_DIR} ({len(built.files)} files)")

    from editkit.evaluation.store import peak_memory_line

    def finish(rows: Sequence[Any], out: Path) -> None:
        click.echo(render_table([asdict(r) for r in rows]))
        click.echo(peak_memory_line())
        click.echo(f"results: {out}")
        if build is not None:
            build(out)

    return finish


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="editkit")
def cli() -> None:
    """Lifelong model editing: many methods, one protocol."""


@cli.command()
@click.option("--methods", default=None, help="Comma list of registered methods ('editkit methods') [default: the methods that declare themselves part of the default comparison].")
@click.option("--set", "overrides", multiple=True, metavar="METHOD.KEY=VALUE", help="Config override for one method of the comparison.")
@click.option("--hparams", "hparams_files", multiple=True, metavar="METHOD=FILE", help="An EasyEdit hparams YAML for one method of the comparison (--set wins over it).")
@_common_options
@click.pass_context
def compare(ctx: click.Context, methods: str, overrides: tuple[str, ...], hparams_files: tuple[str, ...], **opts: Any) -> None:
    """Run several methods on the same stream and print one table (the unedited row 'none' first)."""
    from editkit.evaluation.harness import compare as run_compare
    from editkit.registry import baseline_names, default_comparison, get_editor_spec

    resumed = _resumed(ctx, "compare")
    if resumed is not None:
        methods, overrides, hparams_files = resumed.pop("methods"), resumed.pop("overrides"), resumed.pop("hparams_files")
        opts = resumed

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else default_comparison()
    if not names:
        raise EditkitError("--methods is empty; see 'editkit methods'")
    baselines = baseline_names()
    names = baselines + [n for n in dict.fromkeys(names) if n not in baselines]
    per_method: dict[str, dict[str, Any]] = {n: {} for n in names}
    unused: list[tuple[Path, list[str]]] = []
    for item in hparams_files:
        method, file = _split_pair(item, "--hparams", "METHOD=FILE")
        if method not in per_method:
            raise EditkitError(f"--hparams {item}: use METHOD=FILE with METHOD one of {', '.join(names)}")
        per_method[method], ignored = _hparams(get_editor_spec(method), Path(file))
        unused.append((Path(file), ignored))
    for item in overrides:
        key, value = _split_pair(item)
        method, _, field = key.partition(".")
        if not field or method not in per_method:
            raise EditkitError(f"--set {item}: use METHOD.KEY=VALUE with METHOD one of {', '.join(names)}")
        per_method[method][field] = value
    runs = []
    for name in names:
        spec = get_editor_spec(name)
        runs.append((spec, spec.make_config(**per_method[name])))
    finish = _finisher(opts["with_report"])
    prepared = _prepare("compare", opts, runs, _invocation(ctx, "compare"))
    _report_unused(unused)
    with prepared.lock:
        rows = run_compare(prepared.harness, runs, prepared.out, resume=opts["resume"] is not None)
    finish(rows, prepared.out)


@cli.command()
@click.argument("method", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, e.g. --set lr=1e-4.")
@click.option("--hparams", "hparams_file", type=click.Path(path_type=Path), default=None, help="An EasyEdit hparams YAML of METHOD (--set wins over it).")
@click.option("--load-state", type=click.Path(path_type=Path), default=None, help="Start from an editor state an earlier run saved (its state/ directory) instead of the unedited model.")
@_common_options
@click.pass_context
def run(ctx: click.Context, method: str, overrides: tuple[str, ...], hparams_file: Path | None, load_state: Path | None, **opts: Any) -> None:
    """Run one method (config overrides with --set) and print its table."""
    from editkit.registry import get_editor_spec

    resumed = _resumed(ctx, "run")
    if resumed is not None:
        method, overrides = resumed.pop("method"), resumed.pop("overrides")
        hparams_file, load_state = resumed.pop("hparams_file"), resumed.pop("load_state")
        opts = resumed
    if method is None:
        raise EditkitError("missing METHOD: editkit run METHOD [options] (see 'editkit methods')")

    spec = get_editor_spec(method)
    from_file, ignored = _hparams(spec, hparams_file) if hparams_file is not None else ({}, [])
    config = spec.make_config(**{**from_file, **dict(_split_pair(o) for o in overrides)})
    finish = _finisher(opts["with_report"])
    prepared = _prepare("run", opts, [(spec, config)], _invocation(ctx, "run"), initial_state=load_state)
    _report_unused([(hparams_file, ignored)] if hparams_file is not None else [])
    with prepared.lock:
        prepared.harness.prepare()
        rows = prepared.harness.run(spec, config, prepared.out, resume=opts["resume"] is not None)
    finish(rows, prepared.out)


def _split_pair(item: str, option: str = "--set", form: str = "KEY=VALUE") -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise EditkitError(f"{option} {item}: expected {form}")
    return key.strip(), value


def _hparams(spec: Any, path: Path) -> tuple[dict[str, Any], list[str]]:
    """Config overrides from an EasyEdit hparams file of ``spec``'s method, and the keys editkit does not use."""
    from editkit.easyedit import config_overrides, read_hparams

    values, unused = config_overrides(spec.editor_class.config_class, read_hparams(path), str(path), spec.name)
    try:
        spec.make_config(**values)  # a value the config refuses is the file's fault: say which file
    except EditkitError as exc:
        raise EditkitError(f"--hparams {path}: {exc}") from None
    return values, unused


def _report_unused(files: Sequence[tuple[Path, list[str]]]) -> None:
    """Say which keys of an hparams file were read but not used (run settings such as model_name and
    device come from editkit's own options); only once every input is valid, so an error stays one line."""
    for path, keys in files:
        if keys:
            click.echo(f"editkit: {path}: not used: {', '.join(keys)}", err=True)


@cli.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "tex"]), default="md", show_default=True, help="How the tables are printed (all three are written).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report directory [default: DIR/report; required with several DIRs].")
@click.option("--allow-mixed", is_flag=True, help="Merge runs of different models, datasets, streams, schedules or scorers; the caption states the differences.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the figures (PNG and SVG).")
def report(directories: tuple[Path, ...], fmt: str, out: Path | None, allow_mixed: bool, plots: bool) -> None:
    """Tables and figures from one or more run or compare directories (merged when they compare)."""
    from editkit.reports.report import build_report, default_out, write_report

    target = out if out is not None else default_out(directories)
    built = build_report(directories, allow_mixed=allow_mixed)
    write_report(built, target, plots=plots)
    click.echo(built.text(fmt), nl=False)
    for note in built.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"report: {target} ({len(built.files)} files)", err=True)


@cli.command()
def methods() -> None:
    """Registered editors (built-in and plug-ins) and their default configs."""
    from editkit.registry import available_editors, failed_editors

    for name, spec in available_editors().items():
        config = spec.make_config().to_dict()
        summary = ", ".join(f"{k}={v}" for k, v in config.items())
        click.echo(f"{name:<10} {spec.source:<10} {spec.editor_class.__name__}({summary})")
    for name, reason in failed_editors().items():
        click.echo(f"{name:<10} {'failed':<10} {reason}")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="editkit", standalone_mode=False)
    except EditkitError as exc:
        click.echo(f"editkit: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("editkit: interrupted; results written so far are kept", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"editkit: error: {exc.format_message()}{where}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"editkit: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("editkit: interrupted; results written so far are kept", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
