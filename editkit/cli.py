"""``editkit``: compare, run, report, methods.

Every user mistake surfaces as one line on stderr and exit code 2 (:class:`EditkitError`); input is read and
validated before anything is written, and results are appended as they are produced.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import click

from .errors import EditkitError
from .hashing import sha256_file

DEFAULT_DATA = "default"
DEFAULT_NUM_EDITS = 50


def _common_options(func):
    """The options ``compare`` and ``run`` share (DESIGN §4)."""
    options = [
        click.option("--data", default=DEFAULT_DATA, show_default=True, help="Bundled name (see --help of 'editkit data') or a dataset file."),
        click.option("--columns", default=None, help="Column spec for other datasets, e.g. 'prompt=question,target=answer'."),
        click.option("--num-edits", type=int, default=None, help=f"Length of the stream [default: {DEFAULT_NUM_EDITS} for the bundled stream, else the whole file]."),
        click.option("--start", type=int, default=0, show_default=True, help="Skip this many requests first (e.g. a held-out slice)."),
        click.option("--shuffle/--no-shuffle", default=False, show_default=True, help="Take the first N of a --seed shuffle instead of file order."),
        click.option("--schedule", default="final", show_default=True, help="final | immediate | every:K"),
        click.option("--scorers", default="tf,gen", show_default=True, help="Comma list of tf, gen."),
        click.option("--model", default=None, help="HF model id or local path [default: the embedded SmolLM2-135M-Instruct]."),
        click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N"),
        click.option("--dtype", default="float32", show_default=True, help="float32 | bfloat16 | float16"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=int, default=None, help="CPU threads for torch [default: torch's choice]; 1 when other jobs share the cores."),
        click.option("--batch-size", type=int, default=16, show_default=True, help="Scoring batch size."),
        click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory [default: runs/<command>-<time>]."),
        click.option("--overwrite", is_flag=True, help="Replace the results already in --out."),
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


def _prepare(command: str, opts: dict[str, Any], runs: Sequence[tuple[Any, Any]]) -> Prepared:
    """Validate every input (data, schedule, scorers, model, each method's config against the model)
    before the output directory is touched, so a mistake never leaves a half-written run behind."""
    import transformers

    from editkit.data import load_requests, parse_columns, resolve_source
    from editkit.evaluation.harness import Harness
    from editkit.evaluation.schedules import Schedule
    from editkit.evaluation.scorers import parse_scorers
    from editkit.evaluation.store import prepare_output_dir
    from editkit.evaluation.streams import make_stream
    from editkit.models import load_model

    schedule = Schedule.parse(opts["schedule"])
    scorers = parse_scorers(opts["scorers"])
    if opts["threads"] is not None:
        if opts["threads"] < 1:
            raise EditkitError(f"--threads must be at least 1, got {opts['threads']}")
        import torch

        torch.set_num_threads(opts["threads"])
    if opts["batch_size"] < 1:
        raise EditkitError(f"--batch-size must be at least 1, got {opts['batch_size']}")
    columns = parse_columns(opts["columns"]) if opts["columns"] else None
    requests = load_requests(opts["data"], columns=columns)
    num_edits = opts["num_edits"]
    if num_edits is None and opts["data"] == DEFAULT_DATA:
        num_edits = min(DEFAULT_NUM_EDITS, len(requests))
    stream = make_stream(requests, num_edits, opts["seed"] if opts["shuffle"] else None, opts["start"])
    source = resolve_source(opts["data"])
    dataset_info = {"name": opts["data"], "path": str(source), "sha256": sha256_file(source) if source.is_file() else None}
    transformers.utils.logging.disable_progress_bar()
    loaded = load_model(opts["model"], device=opts["device"], dtype=opts["dtype"], trust_remote_code=opts["trust_remote_code"])
    for spec, config in runs:
        spec.build(loaded.model, loaded.tokenizer, config)  # e.g. a layer path that does not exist
    model_info = {
        "model_id": loaded.model_id,
        "weights_sha256": loaded.weights_sha256,
        "dtype": loaded.dtype,
        "device": loaded.device,
    }
    out = opts["out"] or Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    prepare_output_dir(out, opts["overwrite"])
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
    )
    return Prepared(harness, out)


def _finish(rows: Sequence[Any], out: Path, with_report: bool) -> None:
    from dataclasses import asdict

    from editkit.reports.tables import render_table

    click.echo(render_table([asdict(r) for r in rows]))
    click.echo(f"results: {out}")
    if with_report:
        from editkit.reports.report import REPORT_DIR, build_report, write_report

        built = write_report(build_report([out]), out / REPORT_DIR)
        click.echo(f"report: {out / REPORT_DIR} ({len(built.files)} files)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="editkit")
def cli() -> None:
    """Lifelong model editing: many methods, one protocol."""


@cli.command()
@click.option("--methods", default="memoir,ft", show_default=True, help="Comma list of registered methods ('editkit methods').")
@click.option("--set", "overrides", multiple=True, metavar="METHOD.KEY=VALUE", help="Config override for one method of the comparison.")
@_common_options
def compare(methods: str, overrides: tuple[str, ...], **opts: Any) -> None:
    """Run several methods on the same stream and print one table (the unedited row 'none' first)."""
    from editkit.evaluation.harness import compare as run_compare
    from editkit.registry import get_editor_spec

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise EditkitError("--methods is empty; see 'editkit methods'")
    names = ["none"] + [n for n in dict.fromkeys(names) if n != "none"]
    per_method: dict[str, dict[str, str]] = {n: {} for n in names}
    for item in overrides:
        key, value = _split_override(item)
        method, _, field = key.partition(".")
        if not field or method not in per_method:
            raise EditkitError(f"--set {item}: use METHOD.KEY=VALUE with METHOD one of {', '.join(names)}")
        per_method[method][field] = value
    runs = []
    for name in names:
        spec = get_editor_spec(name)
        runs.append((spec, spec.make_config(**per_method[name])))
    prepared = _prepare("compare", opts, runs)
    rows = run_compare(prepared.harness, runs, prepared.out)
    _finish(rows, prepared.out, opts["with_report"])


@cli.command()
@click.argument("method")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, e.g. --set lr=1e-4.")
@_common_options
def run(method: str, overrides: tuple[str, ...], **opts: Any) -> None:
    """Run one method (config overrides with --set) and print its table."""
    from editkit.registry import get_editor_spec

    spec = get_editor_spec(method)
    config = spec.make_config(**dict(_split_override(o) for o in overrides))
    prepared = _prepare("run", opts, [(spec, config)])
    prepared.harness.prepare()
    rows = prepared.harness.run(spec, config, prepared.out)
    _finish(rows, prepared.out, opts["with_report"])


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise EditkitError(f"--set {item}: expected KEY=VALUE")
    return key.strip(), value


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
    from editkit.registry import available_editors

    for name, spec in available_editors().items():
        config = spec.make_config().to_dict()
        summary = ", ".join(f"{k}={v}" for k, v in config.items())
        click.echo(f"{name:<10} {spec.source:<10} {spec.editor_class.__name__}({summary})")


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
