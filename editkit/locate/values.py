"""Reading keys and values at the subject's last token, and optimising the target value v* of an edit.

A *key* is a module's input at the subject's last token; a *value* its output there. v* is the value that
makes the model say the target: a vector ``delta`` is added to the chosen module's output at the subject's
last token of every prompt, and optimised with Adam on the target's negative log-likelihood (over the
prompt in each context template), plus a KL term that keeps the model's prediction for "<subject> is a"
where it was (so the subject's other properties survive) and a weight decay on ``|delta| / |v|²``; after
each step ``delta`` is clamped to ``clamp_norm_factor`` times the norm of the unedited value (ROME §3.1;
MEMIT Eq. 16 places ``delta`` on the residual stream after the last edited block instead of on the MLP).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from editkit.batching import pad_id, tokenize_pair
from editkit.errors import EditkitError
from editkit.layers import TokenShape, like_module_tensor, resolve_module
from editkit.requests import EditRequest

from .subjects import subject_last_index

#: ROME/MEMIT stop optimising v* once the whole loss is below this
EARLY_STOP_LOSS = 5e-2


@dataclass(frozen=True)
class ValueOptions:
    steps: int
    lr: float
    weight_decay: float
    clamp_norm_factor: float
    kl_factor: float


class _Enough(Exception):
    """Raised once every module a read needs has been seen."""


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _batch(tokenizer: Any, rows: Sequence[Sequence[int]], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        attention[i, : len(r)] = 1
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "use_cache": False}


def _prompt_rows(tokenizer: Any, texts: Sequence[str], subjects: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    rows, lookups = [], []
    for text, subject in zip(texts, subjects):
        ids = list(tokenizer(text).input_ids)
        index = subject_last_index(tokenizer, text, subject)
        if not 0 <= index < len(ids):
            raise EditkitError(f"cannot find the subject '{subject}' among the tokens of '{text}'")
        rows.append(ids)
        lookups.append(index)
    return rows, lookups


@torch.no_grad()
def read_at_subject(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    subjects: Sequence[str],
    paths: Sequence[str],
    what: str,
) -> dict[str, torch.Tensor]:
    """``{path: [len(texts), d]}``: each module's input (``what="input"``) or output at the subject's last
    token of each text (the forward stops once the last module needed has run)."""
    rows, lookups = _prompt_rows(tokenizer, texts, subjects)
    device = next(model.parameters()).device
    found: dict[str, torch.Tensor] = {}
    index = (torch.arange(len(rows), device=device), torch.tensor(lookups, device=device))

    def hook_for(path: str):
        def grab(_module: torch.nn.Module, args: tuple, output: Any = None) -> None:
            tensor = shapes[path].view(args[0] if what == "input" else _first(output))  # OPT: [B·T, D]
            found[path] = tensor[index].float()
            if len(found) == len(paths):
                raise _Enough

        return grab

    handles = []
    shapes = {path: TokenShape(model, path) for path in dict.fromkeys(paths)}
    for path in shapes:
        module = resolve_module(model, path)
        handles.append(module.register_forward_pre_hook(hook_for(path)) if what == "input" else module.register_forward_hook(hook_for(path)))
    try:
        model(**_batch(tokenizer, rows, device))
    except _Enough:
        pass
    finally:
        for handle in [*handles, *shapes.values()]:
            handle.remove()
    return {path: found[path] for path in paths}


def template_keys(
    model: torch.nn.Module, tokenizer: Any, requests: Sequence[EditRequest], templates: Sequence[Sequence[str]], paths: Sequence[str]
) -> dict[str, torch.Tensor]:
    """``{path: [n, d_in]}``: the key of each request at each module, averaged over the templates of each
    group and then over the groups."""
    texts, subjects = [], []
    for request in requests:
        for group in templates:
            texts += [t.replace("{}", request.prompt) for t in group]
            subjects += [request.subject] * len(group)
    read = read_at_subject(model, tokenizer, texts, subjects, paths, "input")
    sizes = [len(group) for group in templates]
    result = {}
    for path, keys in read.items():
        per_request = keys.view(len(requests), sum(sizes), -1)
        groups = torch.split(per_request, sizes, dim=1)
        result[path] = torch.stack([g.mean(dim=1) for g in groups], dim=1).mean(dim=1)
    return result


@contextmanager
def _added_at(model: torch.nn.Module, path: str, rows: torch.Tensor, cols: torch.Tensor, delta: torch.Tensor, seen: list) -> Iterator[None]:
    """Inside the block, ``delta`` is added to the output of the module at ``path`` at (rows, cols); the
    first output seen (with delta still zero) is kept in ``seen``."""
    shape = TokenShape(model, path)

    def add(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
        raw = _first(output)
        tensor = shape.view(raw)  # [B, T, D] (OPT's FFN works on [B·T, D])
        if not seen:
            seen.append(tensor[rows[0], cols[0]].detach().float().clone())
        shift = torch.zeros_like(tensor)
        shift = shift.index_put((rows, cols), delta.to(tensor.dtype).expand(len(rows), -1))
        tensor = like_module_tensor(tensor + shift, raw)
        return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

    handle = resolve_module(model, path).register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()
        shape.remove()


@contextmanager
def _logits_only_at(model: torch.nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[None]:
    """The LM head is evaluated only at (rows, cols): the model's logits come back as [1, len(rows), V]."""
    head = model.get_output_embeddings()

    def gather(_module: torch.nn.Module, args: tuple) -> tuple:
        return (args[0][rows, cols].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def optimise_value(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest,
    templates: Sequence[str],
    module_path: str,
    options: ValueOptions,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """v* at ``module_path``'s output for one request (float32 [d]), and {iterations, loss}."""
    subject = request.subject
    assert subject is not None
    rows: list[list[int]] = []
    lookups: list[int] = []
    label_rows: list[int] = []
    label_cols: list[int] = []
    labels: list[int] = []
    for r, template in enumerate(templates):
        text = template.replace("{}", request.prompt)
        prompt_ids, target_ids = tokenize_pair(tokenizer, text, request.target)
        if not target_ids:
            raise EditkitError(f"edit request {request.id}: the target has no tokens")
        rows.append(prompt_ids + target_ids[:-1])
        lookups.append(_prompt_rows(tokenizer, [text], [subject])[1][0])
        for j, token in enumerate(target_ids):
            label_rows.append(r)
            label_cols.append(len(prompt_ids) - 1 + j)
            labels.append(token)
    kl_text = f"{subject} is a"
    kl_ids, kl_lookup = _prompt_rows(tokenizer, [kl_text], [subject])
    rows.append(kl_ids[0])
    lookups.append(kl_lookup[0])
    device = next(model.parameters()).device
    batch = _batch(tokenizer, rows, device)
    n_rewrite = len(templates)
    at_rows = torch.arange(len(rows), device=device)
    at_cols = torch.tensor(lookups, device=device)
    read_rows = torch.tensor(label_rows + [n_rewrite], device=device)
    read_cols = torch.tensor(label_cols + [lookups[-1]], device=device)
    targets = torch.tensor(labels, device=device)
    per_row = torch.bincount(torch.tensor(label_rows, device=device), minlength=n_rewrite).float()
    row_of = read_rows[:-1]

    width = _output_width(model, resolve_module(model, module_path))
    delta = torch.zeros(width, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=options.lr)
    seen: list[torch.Tensor] = []
    initial_kl: torch.Tensor | None = None
    iterations, nll_value = 0, float("nan")
    with torch.enable_grad(), _added_at(model, module_path, at_rows, at_cols, delta, seen), _logits_only_at(model, read_rows, read_cols):
        for step in range(options.steps):
            logits = model(**batch).logits[0].float()  # [labels + 1, V]
            log_probs = torch.log_softmax(logits[:-1], dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            nll = -(torch.zeros(n_rewrite, device=device).index_add(0, row_of, log_probs) / per_row).mean()
            kl_log_probs = torch.log_softmax(logits[-1:], dim=-1)
            if initial_kl is None:
                initial_kl = kl_log_probs.detach().clone()
            kl = options.kl_factor * F.kl_div(initial_kl, kl_log_probs, log_target=True, reduction="batchmean")
            norm = seen[0].norm()
            decay = options.weight_decay * (delta.norm() / norm**2)
            loss = nll + kl + decay
            nll_value = float(nll.detach())
            if float(loss.detach()) < EARLY_STOP_LOSS or step == options.steps - 1:
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            iterations += 1
            with torch.no_grad():
                limit = options.clamp_norm_factor * norm
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    return (seen[0] + delta.detach()), {"iterations": iterations, "loss": nll_value}


def _output_width(model: torch.nn.Module, module: torch.nn.Module) -> int:
    """The width of the module's output (a Linear's out_features, a Conv1D's nf, or a block's hidden size)."""
    out_features = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if isinstance(out_features, int):
        return out_features
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not isinstance(hidden, int):
        raise EditkitError(f"cannot tell the output width of {type(module).__name__}")
    return hidden
