"""Run options that change *what* is measured rather than how fast: the chat template and the wild judge.

They are resolved here once, for ``compare``, ``run``, ``tune`` (and every other command that assembles a
run), so each is recorded the same way: in the protocol fields on every result row and summary row (and so
in every caption) and in every ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import EditkitError

#: the default protocol of the papers: prompts as they are, no chat template
CHAT_TEMPLATE_DEFAULT = "off"


@dataclass(frozen=True)
class ProtocolOptions:
    stream: Any  # the Stream to run: templated when the chat template is on
    scorer_options: dict[str, Any]
    fields: dict[str, Any]  # on every row
    record: dict[str, Any]  # in every config.json


def with_run_options(opts: Mapping[str, Any], from_files: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """``opts`` with the run options of EasyEdit hparams files filled in where the command line gave none
    (``--chat-template`` given wins, like ``--set`` over a file); files that disagree are refused."""
    resolved = dict(opts)
    for option in ("chat_template",):
        if resolved.get(option) is not None:
            continue
        said = {str(path): values[option] for path, values in from_files if option in values}
        if len(set(said.values())) > 1:
            listed = ", ".join(f"{value} in {path}" for path, value in said.items())
            raise EditkitError(f"--hparams: the files disagree on {option.replace('_', '-')} ({listed}); one stream is scored one way, pass --{option.replace('_', '-')} on|off")
        if said:
            resolved[option] = next(iter(said.values()))
    return resolved


def protocol_options(opts: Mapping[str, Any], scorers: Sequence[str], stream: Any, loaded: Any) -> ProtocolOptions:
    """Apply ``--chat-template`` to the stream and load ``--judge``; refused in one line, before anything
    is written, for a model without a chat template or a judge that cannot be used."""
    from editkit.evaluation.scorers import WildScorer, load_judge
    from editkit.evaluation.streams import with_chat_template

    chat = (opts.get("chat_template") or CHAT_TEMPLATE_DEFAULT) == "on"
    if chat:
        stream = with_chat_template(stream, loaded.tokenizer, loaded.model_id)
    scorer_options: dict[str, Any] = {}
    record: dict[str, Any] = {"chat_template": chat}
    judge = opts.get("judge")
    if judge is not None:
        if WildScorer.name not in scorers:
            raise EditkitError(f"--judge {judge}: judges the wild scorer's answers; add wild to --scorers")
        scorer_options.update(judge=load_judge(judge), judge_name=judge)
        record["judge"] = judge
    return ProtocolOptions(stream, scorer_options, {"chat_template": chat}, record)
