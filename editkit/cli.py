"""``editkit``: compare, run, grid, report, methods.

Every user mistake surfaces as one line on stderr and exit code 2 (:class:`EditkitError`); input is read and
validated before anything is written, and results are appended as they are produced.
"""

from __future__ import annotations

from datetime import datetime
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import click
from click.core import ParameterSource

from .api import DEFAULT_DATA, DEFAULT_NUM_EDITS
from .checks import split_pair
from .errors import EditkitError
from .evaluation.rundir import RunDirectory


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
        click.option("--scorers", default="tf,gen", show_default=True, help="Comma list of tf, gen, wild (free generation: exact match, token F1, fluency)."),
        click.option("--chat-template", type=click.Choice(["on", "off"]), default=None, help="Put every prompt (editing and scoring) through the model's chat template [default: off, or the --hparams file's use_chat_template]."),
        click.option("--judge", default=None, metavar="MODULE:FUNCTION", help="An external judge for the wild scorer: judge(question, answer, reference) -> [0, 1], reported as wild-judge."),
        click.option("--model", default=None, help="HF model id or local path [default: the embedded SmolLM2-135M-Instruct]."),
        click.option("--device", default="auto", show_default=True, help="auto (cuda when there is one, else cpu) | cpu | cuda | cuda:N | mps"),
        click.option("--device-map", default=None, help="auto | balanced | sequential: spread a model that does not fit one device over all of them (accelerate)."),
        click.option("--dtype", default="float32", show_default=True, help="float32 | bfloat16 | float16"),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds every method's own randomness and, with --shuffle, the stream order."),
        click.option("--seeds", default=None, metavar="S1,S2,...", help="Run once per seed into OUT/seed-S and print mean ± std over the seeds."),
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


def _invocation(ctx: click.Context, command: str) -> dict[str, Any]:
    """The command and every option of this call, as JSON, so ``--resume`` can repeat it exactly."""
    from editkit.api import invocation

    return invocation(command, ctx.params)


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
    from editkit import api

    resumed = _resumed(ctx, "compare")
    if resumed is not None:
        methods, overrides, hparams_files = resumed.pop("methods"), resumed.pop("overrides"), resumed.pop("hparams_files")
        opts = resumed
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    names = [c.name for c in api.compare_methods(names)]
    per_method: dict[str, dict[str, Any]] = {n: {} for n in names}
    files: dict[str, Path] = {}
    for item in hparams_files:
        method, file = split_pair(item, "--hparams", "METHOD=FILE")
        if method not in per_method:
            raise EditkitError(f"--hparams {item}: use METHOD=FILE with METHOD one of {', '.join(names)}")
        files[method] = Path(file)
    for item in overrides:
        key, value = split_pair(item)
        method, _, field = key.partition(".")
        if not field or method not in per_method:
            raise EditkitError(f"--set {item}: use METHOD.KEY=VALUE with METHOD one of {', '.join(names)}")
        per_method[method][field] = value
    config = api.CompareConfig(
        methods=tuple(api.MethodChoice(n, per_method[n], files.get(n)) for n in names),
        setup=api.setup_from_params(opts),
        out=opts["out"],
        overwrite=opts["overwrite"],
        resume=opts["resume"] is not None,
    )
    if opts["resume"] is not None:
        config = replace(config, out=opts["resume"])
    _execute(ctx, "compare", config, api.compare, opts)


@cli.command()
@click.argument("method", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, e.g. --set lr=1e-4.")
@click.option("--hparams", "hparams_file", type=click.Path(path_type=Path), default=None, help="An EasyEdit hparams YAML of METHOD (--set wins over it).")
@click.option("--load-state", type=click.Path(path_type=Path), default=None, help="Start from an editor state an earlier run saved (its state/ directory) instead of the unedited model.")
@_common_options
@click.pass_context
def run(ctx: click.Context, method: str, overrides: tuple[str, ...], hparams_file: Path | None, load_state: Path | None, **opts: Any) -> None:
    """Run one method (config overrides with --set) and print its table."""
    from editkit import api
    from editkit.registry import get_editor_spec

    resumed = _resumed(ctx, "run")
    if resumed is not None:
        method, overrides = resumed.pop("method"), resumed.pop("overrides")
        hparams_file, load_state = resumed.pop("hparams_file"), resumed.pop("load_state")
        opts = resumed
    if method is None:
        raise EditkitError("missing METHOD: editkit run METHOD [options] (see 'editkit methods')")
    get_editor_spec(method)  # an unknown method before a malformed --set
    config = api.RunConfig(
        method=api.MethodChoice(method, dict(split_pair(o) for o in overrides), hparams_file),
        setup=api.setup_from_params(opts),
        out=opts["resume"] if opts["resume"] is not None else opts["out"],
        overwrite=opts["overwrite"],
        resume=opts["resume"] is not None,
        load_state=load_state,
    )
    _execute(ctx, "run", config, api.run, opts)


def _execute(ctx: click.Context, command: str, config: Any, function: Any, opts: dict[str, Any]) -> None:
    """Run ``config`` with ``function`` (once, or once per ``--seeds`` seed), then print the table."""
    from editkit import api

    finish = _finisher(opts["with_report"])
    seeds = opts.get("seeds")
    if seeds is None:
        result = function(config, _invocation(ctx, command))
        finish(result.rows, result.out)
        return
    if ctx.get_parameter_source("seed") is not ParameterSource.DEFAULT:
        raise EditkitError("--seed and --seeds: give one of them")

    def invocation_of(one: Any) -> dict[str, Any]:
        params = {**ctx.params, "seed": one.setup.seed, "seeds": None, "out": one.out}
        return api.invocation(command, params)

    result = api.over_seeds(config, api.parse_seeds(seeds), invocation_of)
    for seed, one in result.results.items():
        click.echo(f"seed {seed}: results: {one.out}")
    click.echo(result.table())
    click.echo(f"results: {result.out}")
    if opts["with_report"]:
        from editkit.reports.grid import build_root_report, write_root_report
        from editkit.reports.report import REPORT_DIR

        built = write_root_report(build_root_report(result.out), result.out / REPORT_DIR)
        click.echo(f"report: {result.out / REPORT_DIR} ({len(built.files)} files)")


@cli.command()
@click.argument("method")
@click.option("--grid", "grid_items", multiple=True, required=True, metavar="KEY=V1,V2,...", help="Config values to try on the dev slice (repeat for more keys: every combination runs).")
@click.option("--dev", "dev_slice", required=True, metavar="SLICE", help="Where to tune: a bundled name or data file, optionally NAME@START:COUNT (e.g. zsre-dev).")
@click.option("--test", "test_slice", required=True, metavar="SLICE", help="Where to report the chosen config (e.g. default@0:50); must share no request with --dev.")
@click.option("--criterion", type=click.Choice(["mean", "rel", "gen", "loc"]), default="mean", show_default=True, help="What the choice maximises, under the first of --scorers.")
@_common_options
@click.pass_context
def tune(ctx: click.Context, method: str, grid_items: tuple[str, ...], dev_slice: str, test_slice: str, criterion: str, **opts: Any) -> None:
    """Choose METHOD's config on a dev slice by grid search, then run it on a disjoint test slice."""
    from editkit import api
    from editkit.tune import parse_grid, parse_slice, render_dev_scores
    from editkit.tune import tune as run_tune

    from click.core import ParameterSource

    given = [f"--{k.replace('_', '-')}" for k in ("data", "num_edits", "start", "shuffle", "resume") if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT]
    if given:
        raise EditkitError(f"tune: {', '.join(given)} cannot be used; --dev and --test say which requests run")
    dev, test = parse_slice(dev_slice, "--dev"), parse_slice(test_slice, "--test")
    grid = parse_grid(grid_items)
    opts["out"] = opts["out"] or Path("runs") / f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    finish = _finisher(opts["with_report"])
    invocation = _invocation(ctx, "tune")
    result = run_tune(method, grid, dev, test, criterion, opts, lambda o, runs: api.prepare_configs("tune", o, runs, invocation))
    click.echo(render_dev_scores(result, criterion), nl=False)
    finish(result.test_rows, result.out)


@cli.command()
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "tex"]), default="md", show_default=True, help="How the tables are printed (all three are written).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report directory [default: DIR/report; required with several DIRs].")
@click.option("--allow-mixed", is_flag=True, help="Merge runs of different models, datasets, streams, schedules or scorers; the caption states the differences.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the figures (PNG and SVG).")
@click.option("--stream", "stream", metavar="SLICE", default=None, help="The slice the runs edited (NAME[@START:COUNT], e.g. default@0:300): adds a table of scores over its contested edits and locality prompts in reach.")
def report(directories: tuple[Path, ...], fmt: str, out: Path | None, allow_mixed: bool, plots: bool, stream: str | None) -> None:
    """Tables and figures from one or more run or compare directories (merged when they compare), or of a
    whole grid or --seeds root (one table per model, dataset, schedule and scorer, mean ± std over seeds)."""
    from editkit.reports.grid import is_root
    from editkit.reports.report import build_report, default_out, write_report

    if len(directories) == 1 and is_root(directories[0]):
        if stream is not None:
            raise EditkitError(f"--stream: {directories[0]} is a grid or --seeds root; pass one of its run directories")
        _report_root(directories[0], fmt, out, plots)
        return
    target = out if out is not None else default_out(directories)
    built = build_report(directories, allow_mixed=allow_mixed, stream=stream)
    write_report(built, target, plots=plots)
    click.echo(built.text(fmt), nl=False)
    for note in built.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"report: {target} ({len(built.files)} files)", err=True)


@cli.command()
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="The grid's root: one run directory per cell under ROOT/cells, and ROOT/grid.json.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Worker processes on this machine, or one Ray task per cell.")
@click.option("--address", default=None, help="A running Ray cluster (e.g. ray://host:10001 or auto) [default: a local one started for the grid].")
@click.option("--max-parallel", type=int, default=None, help="Cells at once [default local: cores / threads per cell; ray: as the cluster's resources allow].")
@click.option("--retries", type=int, default=1, show_default=True, help="Tries after the first before a failing cell is marked failed.")
@click.option("--threads", type=int, default=None, help="CPU threads per cell [default: the plan's threads, else its resources.num_cpus].")
@click.option("--status", is_flag=True, help="Print the cell table of ROOT (PLAN may be ROOT itself) and run nothing.")
@click.option("--extend", is_flag=True, help="Accept a plan that adds cells to the grid already in ROOT.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def grid(plan: Path, out: Path | None, executor: str, address: str | None, max_parallel: int | None, retries: int, threads: int | None, status: bool, extend: bool, progress: bool) -> None:
    """Run a grid plan (YAML): every cell once, skipping complete cells and resuming checkpointed ones."""
    from editkit.grid import read_plan, run_grid, status_table

    if status:
        click.echo(status_table(out if out is not None else plan), nl=False)
        return
    if out is None:
        raise EditkitError(f"editkit grid {plan}: give the grid's root with --out ROOT")
    if threads is not None and threads < 1:
        raise EditkitError(f"--threads must be at least 1, got {threads}")
    result = run_grid(read_plan(plan, threads), out, executor, address, max_parallel, retries, extend, progress)
    done = sum(c["status"] == "done" for c in result.record["cells"].values())
    click.echo(f"grid: {done}/{len(result.record['cells'])} cells done ({len(result.ran)} run now); results: {out}")
    if result.failed:
        raise click.ClickException(f"grid: {len(result.failed)} cells failed: {', '.join(result.failed)} (errors in {out / 'grid.json'}, logs in {out / 'logs'})")


def _report_root(root: Path, fmt: str, out: Path | None, plots: bool) -> None:
    from editkit.reports.grid import build_root_report, write_root_report
    from editkit.reports.report import REPORT_DIR

    target = out if out is not None else root / REPORT_DIR
    built = write_root_report(build_root_report(root), target, plots=plots)
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
