"""The Python API: a run or a comparison assembled from typed configs, with typed results.

This is where a run is put together (lm-evaluation-harness's ``simple_evaluate`` is the model); the command
line (``editkit.cli``), ``editkit grid`` and the scripts and benchmarks all call it, so there is one place that
decides what is validated and in which order::

    from editkit import api

    result = api.compare(api.CompareConfig(methods=("memoir", "ft"), setup=api.Setup(num_edits=5, threads=1)))
    print(result.table())
    loaded = api.load_run(result.out / "memoir")      # the editor with its state loaded, and its numbers
    loaded.editor.logits(...)

Preparing a run has two phases, kept apart on purpose: :func:`validate` reads and checks every input (data,
schedule, scorers, model, each method's config and the state to start from) and writes nothing;
:func:`open_output` only then touches the output directory. A new check belongs in :func:`validate`, so a
mistake never leaves a half-written run behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import EditkitError
from .hashing import sha256_file

DEFAULT_DATA = "default"
DEFAULT_NUM_EDITS = 50


@dataclass(frozen=True)
class Setup:
    """What every method of a run shares: the stream, the protocol, the model and the run's mechanics.

    ``seed`` seeds every method's own randomness (``random``, numpy and torch are seeded before each method's
    stream, and a method config's own ``seed`` field follows it unless set explicitly) and, with
    ``shuffle``, the order of the stream."""

    data: str = DEFAULT_DATA
    columns: str | None = None
    num_edits: int | None = None  # None: DEFAULT_NUM_EDITS of the bundled stream, else the whole file
    start: int = 0
    shuffle: bool = False
    schedule: str = "final"
    edits_per_step: int = 1  # requests applied together in one edit step (Editor.edit_batch)
    scorers: str = "tf,gen"
    model: str | None = None
    device: str = "auto"  # cuda when there is one, else cpu
    device_map: str | None = None  # auto | balanced | sequential: one model over several devices
    dtype: str = "float32"
    seed: int = 0
    threads: int | None = None
    batch_size: int = 16
    checkpoint_every: int = 10
    progress: bool = True
    trust_remote_code: bool = False
    chat_template: str | None = None  # on | off; None: off, or what an EasyEdit hparams file's use_chat_template says
    judge: str | None = None  # MODULE:FUNCTION, an external judge of the wild scorer's answers


@dataclass(frozen=True)
class MethodChoice:
    """One method of a run: its registered name, config overrides (as ``--set``) and an EasyEdit hparams file
    (``--set`` wins over it)."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    hparams: Path | None = None


def _choice(method: str | MethodChoice) -> MethodChoice:
    return method if isinstance(method, MethodChoice) else MethodChoice(str(method))


@dataclass(frozen=True)
class RunConfig:
    """One method's run (``editkit run``). ``resume``: continue the run in ``out``."""

    method: str | MethodChoice
    setup: Setup = Setup()
    out: Path | None = None
    overwrite: bool = False
    resume: bool = False
    load_state: Path | None = None  # an earlier run's state/ to start from instead of the unedited model


@dataclass(frozen=True)
class CompareConfig:
    """Several methods on one stream (``editkit compare``); the unedited row ``none`` always comes first."""

    methods: Sequence[str | MethodChoice] | None = None  # None: the default comparison (``editkit methods``)
    setup: Setup = Setup()
    out: Path | None = None
    overwrite: bool = False
    resume: bool = False


@dataclass
class Result:
    """What a run or comparison measured: its summary rows (every number with its method, model, dataset,
    stream, schedule and scorer) and the directory that holds them."""

    out: Path
    rows: list[Any]  # evaluation.store.SummaryRow

    def table(self) -> str:
        from editkit.reports.tables import render_table

        return render_table([asdict(r) for r in self.rows])


@dataclass
class SeedsResult:
    """One :class:`Result` per seed (each in ``out/seed-S``) and the table of their mean ± std."""

    out: Path
    results: dict[int, Result]

    @property
    def rows(self) -> list[Any]:
        return [r for result in self.results.values() for r in result.rows]

    def table(self) -> str:
        from editkit.reports.seeds import render_seed_table

        return render_seed_table({seed: [asdict(r) for r in result.rows] for seed, result in self.results.items()})


# ------------------------------------------------------------------------------------------ preparation
@dataclass
class Validated:
    """Everything a run needs, checked; nothing written yet."""

    harness: Any
    runs: list[tuple[Any, Any]]  # (EditorSpec, EditorConfig)
    unused: list[tuple[Path, list[str]]]  # hparams keys read but not used, said once all input is valid
    loaded: Any  # models.LoadedModel


@dataclass
class Prepared:
    harness: Any
    runs: list[tuple[Any, Any]]
    out: Path
    lock: Any  # the output directory's RunLock, held until the run ends


#: the config field through which a method draws its own randomness; it follows the run's seed
SEED_FIELD = "seed"


def method_configs(methods: Sequence[MethodChoice], seed: int | None = None) -> tuple[list[tuple[Any, Any]], list[tuple[Path, list[str]]]]:
    """(spec, config) of each method, from its overrides and hparams file; every value checked.

    A method whose config has a ``seed`` field (MEMOIR's TopHash permutation, GRACE's cold values, WISE's
    gradient masks) gets the run's ``seed`` there unless ``--set`` or its hparams file sets it, so one
    seed changes every method's own randomness; seed 0 is every config's default."""
    from dataclasses import fields as config_fields

    from editkit.registry import get_editor_spec

    runs, unused = [], []
    for choice in methods:
        spec = get_editor_spec(choice.name)
        from_file: dict[str, Any] = {}
        if choice.hparams is not None:
            from_file, ignored = hparams_overrides(spec, Path(choice.hparams))
            unused.append((Path(choice.hparams), ignored))
        values = {**from_file, **dict(choice.overrides)}
        has_seed = any(f.name == SEED_FIELD for f in config_fields(spec.editor_class.config_class))
        if seed is not None and has_seed and SEED_FIELD not in values:
            values[SEED_FIELD] = seed
        runs.append((spec, spec.make_config(**values)))
    return runs, unused


def hparams_overrides(spec: Any, path: Path) -> tuple[dict[str, Any], list[str]]:
    """Config overrides from an EasyEdit hparams file of ``spec``'s method, and the keys editkit does not use."""
    from editkit.easyedit import config_overrides, read_hparams

    values, unused = config_overrides(spec.editor_class.config_class, read_hparams(path), str(path), spec.name)
    try:
        spec.make_config(**values)  # a value the config refuses is the file's fault: say which file
    except EditkitError as exc:
        raise EditkitError(f"--hparams {path}: {exc}") from None
    return values, unused


def validate(setup: Setup, methods: Sequence[MethodChoice], initial_state: Path | None = None) -> Validated:
    """Read and check every input, in the order a user would fix them; nothing is written."""
    from editkit.evaluation.validation import check_seed

    check_seed(setup.seed)
    methods = [_choice(m) for m in methods]
    runs, unused = method_configs(methods, setup.seed)
    return validate_runs(setup, runs, unused, initial_state, file_run_options(methods))


def file_run_options(methods: Sequence[MethodChoice]) -> list[tuple[Path, dict[str, Any]]]:
    """The run options (``use_chat_template``) each method's EasyEdit hparams file sets."""
    from editkit.easyedit import read_hparams, run_options

    return [(Path(c.hparams), run_options(read_hparams(Path(c.hparams)), str(c.hparams))) for c in methods if c.hparams is not None]


def validate_runs(
    setup: Setup,
    runs: list[tuple[Any, Any]],
    unused: list[tuple[Path, list[str]]] | None = None,
    initial_state: Path | None = None,
    from_files: Sequence[tuple[Path, Mapping[str, Any]]] = (),
) -> Validated:
    """:func:`validate` for configs already built (``editkit tune`` builds one per grid point)."""
    import transformers

    from editkit.data import load_requests, parse_columns, resolve_source
    from editkit.evaluation.harness import Harness
    from editkit.evaluation.schedules import Schedule
    from editkit.evaluation.scorers import parse_scorers
    from editkit.evaluation.streams import check_fits_model, make_stream
    from editkit.evaluation.validation import check_config_values, check_seed
    from editkit.models import context_length, load_model
    from editkit.protocol import protocol_options, with_run_options

    check_seed(setup.seed)
    options = with_run_options({"chat_template": setup.chat_template, "judge": setup.judge}, from_files)
    schedule = Schedule.parse(setup.schedule, per_step=setup.edits_per_step)
    scorers = parse_scorers(setup.scorers)
    if setup.threads is not None:
        if setup.threads < 1:
            raise EditkitError(f"--threads must be at least 1, got {setup.threads}")
        import torch

        torch.set_num_threads(setup.threads)
    if setup.batch_size < 1:
        raise EditkitError(f"--batch-size must be at least 1, got {setup.batch_size}")
    if setup.checkpoint_every < 1:
        raise EditkitError(f"--checkpoint-every must be at least 1, got {setup.checkpoint_every}")
    columns = parse_columns(setup.columns) if setup.columns else None
    requests = load_requests(setup.data, columns=columns)
    num_edits = setup.num_edits
    if num_edits is None and setup.data == DEFAULT_DATA:
        num_edits = min(DEFAULT_NUM_EDITS, len(requests))
    stream = make_stream(requests, num_edits, setup.seed if setup.shuffle else None, setup.start)
    source = resolve_source(setup.data)
    dataset_info = {"name": setup.data, "path": str(source), "sha256": sha256_file(source) if source.is_file() else None}
    transformers.utils.logging.disable_progress_bar()
    loaded = load_model(
        setup.model, device=setup.device, dtype=setup.dtype, trust_remote_code=setup.trust_remote_code, device_map=setup.device_map
    )
    protocol = protocol_options(options, scorers, stream, loaded)  # the chat template, the wild judge
    stream = protocol.stream
    check_fits_model(stream, requests, loaded.tokenizer, context_length(loaded.model), source)
    for spec, config in runs:
        check_config_values(spec.name, config)  # finite, and inside the ranges the config declares
        spec.check_requests(stream.requests)  # fields the method needs, e.g. a subject
        editor = spec.build(loaded.model, loaded.tokenizer, config)  # e.g. a layer path that does not exist
        editor.check_requests(stream.requests)  # e.g. a record whose subject is not in its prompt
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
        seed=setup.seed,
        batch_size=setup.batch_size,
        progress=setup.progress,
        initial_state=initial_state,
        checkpoint_every=setup.checkpoint_every,
        scorer_options=protocol.scorer_options,
        protocol=protocol.fields,
        record=protocol.record,
    )
    return Validated(harness, runs, unused or [], loaded)


def prepare_configs(command: str, params: Mapping[str, Any], runs: list[tuple[Any, Any]], invocation: dict[str, Any]) -> Prepared:
    """Validate ``runs`` (built configs) with the run options in ``params`` and open ``params['out']``."""
    validated = validate_runs(setup_from_params(params), runs)
    return open_output(validated, command, params.get("out"), bool(params.get("overwrite")), False, invocation)


def open_output(
    validated: Validated, command: str, out: Path | None, overwrite: bool, resume: bool, invocation: dict[str, Any]
) -> Prepared:
    """Lock the output directory (a resumed run's own, or a new one that must not already hold results)
    and record the invocation there. The first thing of a run that writes."""
    from editkit.evaluation.checkpoints import open_run_to_resume
    from editkit.evaluation.store import prepare_output_dir

    if resume:
        if out is None:
            raise EditkitError("resume: give the directory of the run to continue")
        lock = open_run_to_resume(Path(out), validated.harness, validated.runs, nested=command == "compare")
        return Prepared(validated.harness, validated.runs, lock.directory, lock)
    out = Path(out) if out is not None else default_out(command)
    lock = prepare_output_dir(out, overwrite, invocation)  # marks the directory as a run and records the invocation
    return Prepared(validated.harness, validated.runs, lock.directory, lock)


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def say_unused(files: Sequence[tuple[Path, list[str]]]) -> None:
    """Say which keys of an hparams file were read but not used (run settings such as model_name and
    device come from editkit's own options); only once every input is valid, so an error stays one line."""
    import click

    for path, keys in files:
        if keys:
            click.echo(f"editkit: {path}: not used: {', '.join(keys)}", err=True)


# ------------------------------------------------------------------------------------------ invocations
def invocation(command: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The command and every option of a run, as JSON, so a resume can repeat it exactly; relative paths
    (--data, --model, ...) are kept as given, with the working directory they are relative to."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {"command": command, "cwd": os.getcwd(), "params": {k: plain(v) for k, v in params.items()}}


def _setup_params(setup: Setup, out: Path | None, overwrite: bool) -> dict[str, Any]:
    """The setup as the command line's options (what ``--resume`` reads back)."""
    return {
        **{f.name: getattr(setup, f.name) for f in fields(Setup)},
        "out": out,
        "overwrite": overwrite,
        "resume": None,
        "with_report": False,
        "seeds": None,
    }


def run_invocation(config: RunConfig) -> dict[str, Any]:
    choice = _choice(config.method)
    params = {
        "method": choice.name,
        "overrides": [f"{k}={v}" for k, v in choice.overrides.items()],
        "hparams_file": choice.hparams,
        "load_state": config.load_state,
        **_setup_params(config.setup, config.out, config.overwrite),
    }
    return invocation("run", params)


def compare_invocation(config: CompareConfig) -> dict[str, Any]:
    choices = [_choice(m) for m in config.methods]
    params = {
        "methods": ",".join(c.name for c in choices),
        "overrides": [f"{c.name}.{k}={v}" for c in choices for k, v in c.overrides.items()],
        "hparams_files": [f"{c.name}={c.hparams}" for c in choices if c.hparams is not None],
        **_setup_params(config.setup, config.out, config.overwrite),
    }
    return invocation("compare", params)


def setup_from_params(params: Mapping[str, Any]) -> Setup:
    """The :class:`Setup` part of a command's options (the rest are the command's own)."""
    return Setup(**{f.name: params[f.name] for f in fields(Setup) if f.name in params})


# ------------------------------------------------------------------------------------------ running
def compare_methods(methods: Sequence[str | MethodChoice] | None) -> list[MethodChoice]:
    """The methods of a comparison, the unedited baseline(s) first, each once; None: the methods that
    declare themselves part of the default comparison."""
    from editkit.registry import baseline_names, default_comparison

    choices = [_choice(m) for m in (methods if methods is not None else default_comparison())]
    if not choices:
        raise EditkitError("--methods is empty; see 'editkit methods'")
    by_name = {c.name: c for c in choices}
    baselines = baseline_names()
    return [by_name.get(b, MethodChoice(b)) for b in baselines] + [c for name, c in by_name.items() if name not in baselines]


def run(config: RunConfig, invocation: dict[str, Any] | None = None) -> Result:
    """Edit the stream with one method, scoring under the schedule; results in ``config.out``."""
    initial_state = Path(config.load_state) if config.load_state is not None else None
    validated = validate(config.setup, [_choice(config.method)], initial_state=initial_state)
    prepared = open_output(validated, "run", config.out, config.overwrite, config.resume, invocation or run_invocation(config))
    say_unused(validated.unused)
    with prepared.lock:
        prepared.harness.prepare()
        spec, method_config = prepared.runs[0]
        rows = prepared.harness.run(spec, method_config, prepared.out, resume=config.resume)
    return Result(prepared.out, rows)


def compare(config: CompareConfig, invocation: dict[str, Any] | None = None) -> Result:
    """Every method on the same stream, one sub-directory each and a combined ``summary.json``."""
    from editkit.evaluation.harness import compare as run_compare

    config = replace(config, methods=tuple(compare_methods(config.methods)))
    validated = validate(config.setup, config.methods)
    prepared = open_output(validated, "compare", config.out, config.overwrite, config.resume, invocation or compare_invocation(config))
    say_unused(validated.unused)
    with prepared.lock:
        rows = run_compare(prepared.harness, prepared.runs, prepared.out, resume=config.resume)
    return Result(prepared.out, rows)


def over_seeds(config: RunConfig | CompareConfig, seeds: Sequence[int], invocation_of: Any = None) -> SeedsResult:
    """The same run once per seed, each into ``out/seed-S`` (its own resumable run directory)."""
    if not seeds:
        raise EditkitError("--seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise EditkitError(f"--seeds {','.join(map(str, seeds))}: a seed is repeated")
    if config.resume:
        raise EditkitError("--seeds with --resume: resume each seed's directory (OUT/seed-S) on its own")
    command = "run" if isinstance(config, RunConfig) else "compare"
    root = Path(config.out) if config.out is not None else default_out(command)
    results: dict[int, Result] = {}
    for seed in seeds:
        one = replace(config, setup=replace(config.setup, seed=seed), out=root / f"seed-{seed}")
        made = invocation_of(one) if invocation_of is not None else None
        results[seed] = run(one, made) if isinstance(one, RunConfig) else compare(one, made)
    return SeedsResult(root, results)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise EditkitError(f"--seeds {text}: expected a comma list of integers, e.g. 0,1,2") from None
    if not seeds:
        raise EditkitError("--seeds is empty")
    return seeds


# ------------------------------------------------------------------------------------------ without a run
@dataclass
class Ready:
    """An editor ready for its first edit on a checked stream, with no run directory (for scripts that study
    a method's internals: routing overlaps, activation gaps)."""

    editor: Any
    stream: Any  # evaluation.streams.Stream
    loaded: Any  # models.LoadedModel


def ready_editor(setup: Setup, method: str | MethodChoice) -> Ready:
    """Everything :func:`validate` checks, then the editor built and prepared as the harness prepares it."""
    validated = validate(setup, [_choice(method)])
    spec, config = validated.runs[0]
    stream = validated.harness.stream
    editor = spec.build(validated.loaded.model, validated.loaded.tokenizer, config)
    editor.prepare([r.irrelevant for r in stream.requests if r.irrelevant])
    return Ready(editor, stream, validated.loaded)


# ------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A finished (or checkpointed) method run: its editor on a freshly loaded model, state loaded."""

    directory: Path
    editor: Any
    config: dict[str, Any]  # the run's config.json
    rows: list[dict[str, Any]]  # its summary.json
    step: int  # edits the loaded state holds
    loaded: Any  # models.LoadedModel the editor edits


def load_run(directory: Path | str, method: str | None = None, device: str | None = None) -> LoadedRun:
    """The editor of a run directory with its saved state, and its results. A ``compare`` directory needs
    ``method`` (its sub-directory); the model is the one the run edited (its weights hash is checked)."""
    from editkit.evaluation.checkpoints import read_run_checkpoint
    from editkit.evaluation.store import CONFIG, INVOCATION, read_summary
    from editkit.models import load_model
    from editkit.registry import get_editor_spec

    directory = Path(directory)
    if method is not None:
        directory = directory / method
    file = directory / CONFIG
    if not file.is_file():
        subdirs = sorted(p.name for p in directory.iterdir() if (p / CONFIG).is_file()) if directory.is_dir() else []
        hint = f"; a comparison: pass method= one of {', '.join(subdirs)}" if subdirs else ""
        raise EditkitError(f"{directory}: no {CONFIG} here, so not a method's run directory{hint}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
        model_info, method_name, method_config = config["model"], config["method"], config["method_config"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise EditkitError(f"{file}: not a run config editkit wrote") from None
    checkpoint = read_run_checkpoint(directory)
    if checkpoint.state is None:
        raise EditkitError(f"{directory}: holds no saved editor state yet (no checkpoint)")
    model = _model_as_given(directory, INVOCATION) or model_info.get("model_id")
    loaded = load_model(model, device=device or model_info.get("device", "cpu"), dtype=model_info.get("dtype", "float32"))
    expected = model_info.get("weights_sha256")
    if expected and loaded.weights_sha256 and loaded.weights_sha256 != expected:
        raise EditkitError(f"{directory}: was run on weights {expected[:12]}, the model found now has {loaded.weights_sha256[:12]}")
    spec = get_editor_spec(method_name)
    editor = spec.build(loaded.model, loaded.tokenizer, spec.make_config(**method_config))
    editor.load_state(checkpoint.state)
    rows = read_summary(directory) if (directory / "summary.json").is_file() else []
    return LoadedRun(directory, editor, config, rows, checkpoint.step, loaded)


def _model_as_given(directory: Path, name: str) -> str | None:
    """The --model of the run's invocation (in the run or its comparison directory), resolved against the
    directory it was given in: a relative path or an alias is how the model is found again."""
    for place in (directory, directory.parent):
        file = place / name
        if not file.is_file():
            continue
        try:
            stored = json.loads(file.read_text(encoding="utf-8"))
            model, cwd = stored["params"].get("model"), stored.get("cwd")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if model and cwd and not Path(model).is_absolute() and (Path(cwd) / model).exists():
            return str(Path(cwd) / model)
        return model
    return None
