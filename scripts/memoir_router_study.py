"""Routing variants of ``memoir+`` that are not options, compared on a dev slice before any training.

    python scripts/memoir_router_study.py --data DATA [--start S] [--num-edits N] [--threads 1]

``memoir+``'s router (rerank + subject check) is evaluated with the editor's own tables, without and with
the per-edit calibration of the subject margin (``subject_calibrate``, on in ``memoir+`` since this study),
then the variants this study asked about (docs/tuning/memoir-plus.md, "Router variants"):

- **a larger global margin** of the subject check (``subject_margin``);
- **the calibration without its margin**: the query must beat the edit's best stand-in (its own score
  ``cos(s_i, f_j) − cos(s_i, r_j^{−i})`` against the relation of the other stand-ins) but by nothing more;
- **real stand-ins**: the subjects of earlier edits with the same prompt template (the stream's own
  same-relation entities, online: never a later request), topped up with the fixed names;
- **a subject-token check**: the edit prompt's activation at its subject's last token (decentred, unit)
  is stored, and a query must hold a prompt token within a cosine of it;
- **lower τ / rerank_tau**: more candidates for the cosine and the subject check to sort.

Routing depends only on what is stored per edit, so no edit is trained (as ``routing_check``). Prints, per
variant, the share of rephrases routed (and routed to their own edit), of locality prompts routed, and how
many of the scored prompts (edit prompts, rephrases, locality prompts) change their decision against the
first row: where none does, a trained run scores exactly the same under either.

``--margins M1,M2,...`` prints instead memoir+'s own router at those subject margins (a quick table for a
long stream); ``--rivals L:S,...`` at its own margin with those ``rival_lead:rival_same_subject`` checks
(the first row without one). ``--misroutes`` prints instead which rephrases reach another edit than their own under memoir+'s re-rank,
and whether that edit has the same subject and another target (docs/tuning/memoir-plus.md, "Siblings").
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from editkit.batching import encode
from editkit.data import load_requests
from editkit.evaluation.streams import folded, locality_in_reach, make_stream
from editkit.locate.subjects import subject_last_index
from editkit.methods.memoir import MemoirEditor
from editkit.methods.memoir.subjects import SWAP_SUBJECTS, SubjectTable, swapped_prompts
from editkit.models import load_model
from editkit.registry import get_editor_spec
from editkit.requests import EditRequest

_BATCH = 16


class Queries:
    """Per query prompt: mask overlaps with every stored row, unit pooled feature, unit decentred token
    activations (over its prompt positions)."""

    def __init__(self, editor: MemoirEditor, prompts: list[str]):
        background = editor._ensure_background()
        overlaps, pooled, self.tokens = [], [], []
        with torch.no_grad():
            for start in range(0, len(prompts), _BATCH):
                batch = encode(editor.tokenizer, prompts[start : start + _BATCH], device=editor.device)
                acts = editor.split.module_inputs(batch)
                _, masks, features = editor.query_features(acts, batch.prompt_mask)
                overlaps.append(editor.database.overlaps(masks))
                pooled.append(features.cpu())
                units = F.normalize(acts.float() - background, dim=-1).cpu()
                self.tokens += [units[row][batch.prompt_mask[row].cpu()] for row in range(len(units))]
        self.overlaps, self.pooled = np.concatenate(overlaps), torch.cat(pooled)


def token_vector(editor: MemoirEditor, request: EditRequest) -> torch.Tensor:
    """The edit prompt's decentred activation at its subject's last token, unit-normalised."""
    batch = encode(editor.tokenizer, [request.prompt], device=editor.device)
    with torch.no_grad():
        acts = editor.split.module_inputs(batch)[0].float() - editor._ensure_background()
    return F.normalize(acts[subject_last_index(editor.tokenizer, request.prompt, request.subject)].cpu(), dim=0)


def real_stand_ins(stream: list[EditRequest], count: int) -> list[list[str]]:
    """Per edit: its prompt with the subject swapped for earlier edits' subjects of the same template
    (newest first), topped up with the fixed stand-ins."""
    seen: list[tuple[str, str]] = []
    out = []
    for request in stream:
        subject = request.subject or ""
        template = request.prompt.replace(subject, "{}")
        names = list(dict.fromkeys(s for s, t in reversed(seen) if t == template and s != subject))[:count]
        names += [n for n in SWAP_SUBJECTS if n != subject and n not in names][: count - len(names)]
        out.append([request.prompt.replace(subject, n) for n in names])
        seen.append((subject, template))
    return out


def route(editor: MemoirEditor, queries: Queries, margin: float, table: SubjectTable | None = None,
          tau: float | None = None, rerank_tau: float | None = None, rival: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The re-rank + subject-check decision for each query, as ``MemoirEditor._best_overlaps`` makes it,
    with any of its numbers or its subject table replaced, and ``rival`` the (``rival_lead``,
    ``rival_same_subject``) check (default: the editor's own): (memory on, chosen row or −1 without a
    candidate)."""
    cfg = editor.config
    tau, rerank_tau, table = cfg.tau if tau is None else tau, cfg.rerank_tau if rerank_tau is None else rerank_tau, editor.subjects if table is None else table
    lead, same = (cfg.rival_lead, cfg.rival_same_subject) if rival is None else rival
    shortlists: list = []
    rows, cosines, found = editor.features.rerank(queries.overlaps, queries.pooled, tau * editor.k, cfg.rerank_candidates, editor.k, shortlists)
    chosen = np.where(found, rows, -1)
    on = found & (cosines >= rerank_tau) & (table.margins(chosen, queries.pooled, cosines, margin) >= 0)
    if lead:
        on &= table.rival_leads(shortlists, chosen, editor.features.matrix, same) >= lead
    return on, chosen


def misroutes(editor: MemoirEditor, stream: list[EditRequest], edits: list[EditRequest]) -> None:
    """The rephrases whose chosen edit (the re-ranked candidate, memory on or not) is not their own: how many
    reach an edit of the same subject, how many of those give another answer, how many are word for word
    that edit's prompt; then each one, with both edits' prompts and targets."""
    cfg = editor.config
    owners = [(editor.edit_rows[i], r) for i, r in enumerate(stream) for _ in r.rephrases]
    questions = [q for r in stream for q in r.rephrases]
    queries = Queries(editor, questions)
    rows, _, _ = editor.features.rerank(queries.overlaps, queries.pooled, cfg.tau * editor.k, cfg.rerank_candidates, editor.k)
    wrong = [(q, own, edits[row]) for q, (row_own, own), row in zip(questions, owners, rows) if row >= 0 and row != row_own]
    same = [(q, own, other) for q, own, other in wrong if folded(own.subject or "") == folded(other.subject or "")]
    answer = [(q, own, other) for q, own, other in same if folded(own.target) != folded(other.target)]
    verbatim = [(q, own, other) for q, own, other in answer if folded(q) == folded(other.prompt)]
    print(f"{len(questions)} rephrases; {len(wrong)} reach another edit than their own, {len(same)} of them an edit of the same subject, "
          f"{len(answer)} of those with another target, {len(verbatim)} of those word for word its prompt")
    # locality prompts the memory switches on, split by whether they name another edit's subject
    reach = locality_in_reach(stream)
    prompts = [(r.id, i, p) for r in stream for i, (p, _) in enumerate(r.locality)]
    local = Queries(editor, [p for _, _, p in prompts])
    on, _ = route(editor, local, editor.subject_margin())
    named = np.array([any(i == index for index, _ in reach.get(edit, ())) for edit, i, _ in prompts], dtype=bool)
    print(f"{len(prompts)} locality prompts, {int(on.sum())} switch the memory on; {int(named.sum())} name another edit's subject, "
          f"{int((on & named).sum())} of them on; of the {int((~named).sum())} others, {int((on & ~named).sum())} on")
    for q, own, other in wrong:
        print(f"- {q!r}\n    own:     {own.prompt!r} -> {own.target!r}\n    reached: {other.prompt!r} -> {other.target!r}")


def margins(editor: MemoirEditor, stream: list[EditRequest], values: list[float], rivals: list[tuple[float, float]] | None = None) -> None:
    """memoir+'s router (calibrated subject check, growing margin) at other subject margins, or at its own
    margin with other (``rival_lead``, ``rival_same_subject``) checks: the share of rephrases on (and on
    their own edit) and of locality prompts on; only the stored tables memoir+ builds itself."""
    owners = np.array([editor.edit_rows[i] for i, r in enumerate(stream) for _ in r.rephrases])
    rephrases = Queries(editor, [q for r in stream for q in r.rephrases])
    locality = Queries(editor, [p for r in stream for p, _ in r.locality])
    print(f"{len(stream)} edits: {len(owners)} rephrases, {len(locality.tokens)} locality prompts")
    settings = [(m, None) for m in values] + [(editor.subject_margin(), r) for r in rivals or ()]
    print("| subject margin (calibrated) | rival lead, same subject at | rephrases on | ... to their own edit | locality on |\n|---|---|---|---|---|")
    for margin, rival in settings:
        (on, chosen), (outside, _) = route(editor, rephrases, margin, rival=rival), route(editor, locality, margin, rival=rival)
        shown = "off" if rival is None or not rival[0] else f"{rival[0]:.2f}, {rival[1]:.2f}"
        print(f"| {margin:.3f} | {shown} | {on.mean():.3f} | {(on & (chosen == owners)).mean():.3f} | {outside.mean():.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="zsre-dev")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--num-edits", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--misroutes", action="store_true", help="instead of the variants: memoir+'s misrouted rephrases, counted and listed")
    parser.add_argument("--margins", default=None, help="instead of the variants: memoir+ (calibrated) at these subject margins, e.g. 0.02,0.08")
    parser.add_argument("--rivals", default=None, help="instead of the variants: memoir+ at its own margin with these rival_lead:rival_same_subject checks, e.g. 0.1:0.5,0.2:0.5")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(None)
    stream = make_stream(load_requests(args.data), args.num_edits, start=args.start).requests
    spec = get_editor_spec("memoir+")
    # the variants build the calibrated table themselves; --misroutes routes as memoir+ does (calibrated)
    own_table = args.misroutes or args.margins is not None or args.rivals is not None
    editor: MemoirEditor = spec.build(loaded.model, loaded.tokenizer, spec.make_config(**({} if own_table else {"subject_calibrate": False})))
    cfg = editor.config
    editor.prepare([r.irrelevant for r in stream if r.irrelevant])
    editor.check_requests(stream)
    editor.remember(stream)
    assert editor.features is not None and editor.subjects is not None
    first_edit = {}  # database row -> the first edit that stored it (the one whose tables it holds)
    for index, row in enumerate(editor.edit_rows):
        first_edit.setdefault(row, index)
    edits = [stream[first_edit[row]] for row in range(len(editor.database))]

    if args.misroutes:
        misroutes(editor, stream, edits)
        return
    if args.margins is not None or args.rivals is not None:
        rivals = [tuple(float(x) for x in item.split(":")) for item in args.rivals.split(",")] if args.rivals else []
        margins(editor, stream, [float(m) for m in args.margins.split(",")] if args.margins else [], [(0.0, 0.5), *rivals] if rivals else None)
        return
    # per stored row: the calibrated table (as memoir+ builds it) and the real stand-ins' relation
    calibrated, real = SubjectTable(editor.width, calibrated=True), SubjectTable(editor.width)
    real_prompts = real_stand_ins(edits, cfg.subject_swaps)
    for row, request in enumerate(edits):
        own = editor.features.matrix[row]
        calibrated.add(own, editor.prompt_features(swapped_prompts(request, cfg.subject_swaps), together=True)[cfg.rerank_feature])
        real.add(own, editor.prompt_features(real_prompts[row], together=True)[cfg.rerank_feature])
    subject_tokens = torch.stack([token_vector(editor, r) for r in edits])

    owners = np.array([editor.edit_rows[i] for i, r in enumerate(stream) for _ in r.rephrases])
    edit_prompts = Queries(editor, [r.prompt for r in stream])
    rephrases = Queries(editor, [q for r in stream for q in r.rephrases])
    locality = Queries(editor, [p for r in stream for p, _ in r.locality])

    Rule = Callable[[Queries], tuple[np.ndarray, np.ndarray]]

    def rule(tau: float = cfg.tau, rerank_tau: float = cfg.rerank_tau, margin: float = cfg.subject_margin,
             table: SubjectTable = editor.subjects, token: float | None = None) -> Rule:
        def decide(queries: Queries) -> tuple[np.ndarray, np.ndarray]:
            on, chosen = route(editor, queries, margin, table, tau, rerank_tau)
            if token is not None:
                sims = np.array([float((queries.tokens[q] @ subject_tokens[max(r, 0)]).max()) for q, r in enumerate(chosen)])
                on &= sims >= token
            return on, chosen

        return decide

    variants: dict[str, Rule] = {
        f"memoir+ uncalibrated (tau {cfg.tau}, rerank_tau {cfg.rerank_tau}, margin {cfg.subject_margin})": rule(),
        "memoir+ (calibrated: margin + best stand-in)": rule(table=calibrated),
        **{f"calibrated, margin {m:.2f}": rule(table=calibrated, margin=m) for m in (0.04, 0.08)},
        "margin .05": rule(margin=0.05),
        "margin .10": rule(margin=0.10),
        "best stand-in, no margin": rule(table=calibrated, margin=0.0),
        "real stand-ins (earlier same-template subjects)": rule(table=real),
        **{f"subject token cos >= {t}": rule(token=t) for t in (0.6, 0.7, 0.8)},
        **{f"tau {t}, rerank_tau {rt}": rule(tau=t, rerank_tau=rt) for t in (0.4, 0.45) for rt in (0.4, 0.5)},
    }
    print(f"{len(stream)} edits from {args.data} (start {args.start}): {len(owners)} rephrases, {len(locality.tokens)} locality prompts")
    print("| variant | edit prompts on | rephrases on | ... to their own edit | locality on | decisions changed |\n|---|---|---|---|---|---|")
    reference = None
    for name, decide in variants.items():
        decisions = [decide(queries) for queries in (edit_prompts, rephrases, locality)]
        flat = np.concatenate([on for on, _ in decisions])
        reference = flat if reference is None else reference
        (edits_on, _), (on, chosen), (outside, _) = decisions
        print(f"| {name} | {edits_on.mean():.3f} | {on.mean():.3f} | {(on & (chosen == owners)).mean():.3f} | {outside.mean():.3f} | {int((flat != reference).sum())} |")


if __name__ == "__main__":
    main()
