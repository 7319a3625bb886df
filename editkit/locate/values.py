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
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from editkit.batching import PromptBatch, pad_id, tokenize_pair
from editkit.errors import EditkitError
from editkit.layers import TokenShape, like_module_tensor, resolve_module
from editkit.partial import LowerPart, SplitForward
from editkit.tier import FULL, PADDED, FastPath
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


@dataclass(frozen=True)
class _ValueBatch:
    """One request's v* batch: the prompt in every context template, then the KL prompt, right-padded.

    ``at``: (rows, columns) where ``delta`` joins (each row's subject last token); ``read``: the logits the
    loss reads, every target token's then the KL prompt's subject position (last)."""

    batch: PromptBatch
    at: tuple[torch.Tensor, torch.Tensor]
    read: tuple[torch.Tensor, torch.Tensor]
    targets: torch.Tensor  # [labels] token ids
    row_of: torch.Tensor  # [labels] the template row of each label
    per_row: torch.Tensor  # [templates] labels per template row

    @property
    def n_rewrite(self) -> int:
        return int(self.per_row.numel())


def _value_batch(tokenizer: Any, request: EditRequest, templates: Sequence[str], device: torch.device) -> _ValueBatch:
    subject = request.subject
    assert subject is not None
    rows: list[list[int]] = []
    lookups: list[int] = []
    label_rows: list[int] = []
    label_cols: list[int] = []
    labels: list[int] = []
    target_spans: list[tuple[int, int]] = []
    for r, template in enumerate(templates):
        text = template.replace("{}", request.prompt)
        prompt_ids, target_ids = tokenize_pair(tokenizer, text, request.target)
        if not target_ids:
            raise EditkitError(f"edit request {request.id}: the target has no tokens")
        rows.append(prompt_ids + target_ids[:-1])
        lookups.append(_prompt_rows(tokenizer, [text], [subject])[1][0])
        target_spans.append((len(prompt_ids), len(prompt_ids) + len(target_ids) - 1))
        for j, token in enumerate(target_ids):
            label_rows.append(r)
            label_cols.append(len(prompt_ids) - 1 + j)
            labels.append(token)
    kl_ids, kl_lookup = _prompt_rows(tokenizer, [f"{subject} is a"], [subject])
    rows.append(kl_ids[0])
    lookups.append(kl_lookup[0])
    target_spans.append((len(kl_ids[0]), len(kl_ids[0])))
    forward = _batch(tokenizer, rows, device)
    attention = forward["attention_mask"]
    columns = torch.arange(attention.shape[1], device=device)
    starts = torch.tensor([s for s, _ in target_spans], device=device)[:, None]
    ends = torch.tensor([e for _, e in target_spans], device=device)[:, None]
    target_mask = (columns >= starts) & (columns < ends)
    batch = PromptBatch(forward["input_ids"], attention, attention.bool() & ~target_mask, target_mask, "right")
    n_rewrite = len(templates)
    label_row_tensor = torch.tensor(label_rows, device=device)
    return _ValueBatch(
        batch=batch,
        at=(torch.arange(len(rows), device=device), torch.tensor(lookups, device=device)),
        read=(torch.tensor(label_rows + [n_rewrite], device=device), torch.tensor(label_cols + [lookups[-1]], device=device)),
        targets=torch.tensor(labels, device=device),
        row_of=label_row_tensor,
        per_row=torch.bincount(label_row_tensor, minlength=n_rewrite).float(),
    )


# The fast v* loop keeps the padded batch (PADDED). Its rows (the prompt behind 5-20 context templates
# of similar length) carry little padding, and packing them into one row (as MEMOIR's loop can) makes
# attention quadratic in all their tokens: ROME's 22 rows on the default model (1 thread) took 6.7 s a
# step in the full forward, 5.3 split and padded, 6.2 split and packed; MEMIT's 7 rows 1.9, 1.6 and 1.6.

#: a v* step's logits: [labels + 1, V] at the positions the loss reads, for the current ``delta``
StepLogits = Callable[[], torch.Tensor]


def _full_step(model: torch.nn.Module, path: str, vb: _ValueBatch, delta: torch.Tensor) -> tuple[StepLogits, Callable[[], torch.Tensor]]:
    """The reference step: the whole model on the padded batch, ``delta`` hooked onto ``path``'s output
    and the LM head hooked to run at the read positions only. Also returns the unedited value at row 0's
    subject (known after the first call)."""
    seen: list[torch.Tensor] = []
    forward = {"input_ids": vb.batch.input_ids, "attention_mask": vb.batch.attention_mask, "use_cache": False}
    module, head = resolve_module(model, path), model.get_output_embeddings()
    (at_rows, at_cols), (read_rows, read_cols) = vb.at, vb.read

    def logits() -> torch.Tensor:
        shape = TokenShape(model, path)

        def add(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            raw = _first(output)
            tensor = shape.view(raw)  # [B, T, D] (OPT's FFN works on [B·T, D])
            if not seen:
                seen.append(tensor[at_rows[0], at_cols[0]].detach().float().clone())
            shift = torch.zeros_like(tensor).index_put((at_rows, at_cols), delta.to(tensor.dtype).expand(len(at_rows), -1))
            tensor = like_module_tensor(tensor + shift, raw)
            return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

        def gather(_module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0][read_rows, read_cols].unsqueeze(0), *args[1:])

        handles = [module.register_forward_hook(add), head.register_forward_pre_hook(gather), shape]
        try:
            return model(**forward).logits[0]
        finally:
            for handle in handles:
                handle.remove()

    return logits, lambda: seen[0]


def _split_step(split: SplitForward, at_block: bool, vb: _ValueBatch, lower: LowerPart, delta: torch.Tensor) -> StepLogits:
    """The fast step: block ``L``'s lower part cached, ``delta`` joined at the module's output (through the
    rest of block ``L`` where a norm follows the FFN) or at block ``L``'s output, and only the blocks above
    run, with the LM head only at the read positions."""
    (at_rows, at_cols), (read_rows, read_cols) = vb.at, vb.read
    base = lower.block_out if at_block else lower.module_out
    additive = at_block or split.output_is_additive(vb.batch)
    mask, positions = vb.batch.attention_mask, vb.batch.position_ids

    def logits() -> torch.Tensor:
        shift = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
        shift = shift.index_put((at_rows, at_cols), delta.expand(len(at_rows), -1))
        return split.edited_logits(lower, shift, additive, mask, positions, read_rows, read_cols)

    return logits


class ValueLoop:
    """How v*'s steps run the model, decided once per editor.

    Nothing below the point where ``delta`` joins changes while v* is optimised, so the fast loop computes
    block ``L``'s lower part once per request and each step runs only the blocks above (the same split
    forward the memory editors train through, :mod:`editkit.partial`); on the first request it is compared
    with the full forward, with a non-zero ``delta``, and used only when it matches (else the fallback is
    announced once and every edit records ``loop: full``). ``value_path``: the module whose output v* is
    optimised at (``split``'s module, or the block that holds it)."""

    def __init__(self, model: torch.nn.Module, value_path: str, split: SplitForward, owner: object):
        self.model, self.value_path, self.split = model, value_path, split
        self.at_block = value_path == f"{split.blocks_path}.{split.block_index}"
        reason = split.reason
        if reason is None and not self.at_block and value_path != split.module_path:
            reason = f"v* is placed at {value_path}, which is neither {split.module_path} nor its block"
        self.fast_path = FastPath(reason, owner)

    def step(self, vb: _ValueBatch, delta: torch.Tensor) -> tuple[StepLogits, Callable[[], torch.Tensor], str]:
        """The step's logits function, the unedited value at row 0's subject, and the loop's name."""
        full, initial = _full_step(self.model, self.value_path, vb, delta)
        if not self.fast_path.usable:
            return full, initial, FULL
        lower = self.split.lower(vb.batch)
        base = lower.block_out if self.at_block else lower.module_out
        steps = {PADDED: _split_step(self.split, self.at_block, vb, lower, delta)}
        if self.fast_path.choose(full, steps, probe=_probe(delta, base)) == FULL:
            return full, initial, FULL
        value = base[vb.at[0][0], vb.at[1][0]].detach().float().clone()
        return steps[PADDED], lambda: value, PADDED


@contextmanager
def _probe(delta: torch.Tensor, base: torch.Tensor) -> Iterator[None]:
    """A random ``delta`` of a tenth of the values' scale for the one-off check (so the point where it
    joins is tested too, not only the cached lower layers); zero again after."""
    generator = torch.Generator().manual_seed(1234)
    scale = float(base.float().abs().mean()) or 1.0
    with torch.no_grad():
        delta.copy_(torch.randn(delta.shape, generator=generator).to(delta.device) * 0.1 * scale)
    try:
        yield
    finally:
        with torch.no_grad():
            delta.zero_()


def optimise_value(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest,
    templates: Sequence[str],
    loop: ValueLoop,
    options: ValueOptions,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """v* at ``loop.value_path``'s output for one request (float32 [d]), and {iterations, loss, loop}."""
    device = next(model.parameters()).device
    vb = _value_batch(tokenizer, request, templates, device)
    width = _output_width(model, resolve_module(model, loop.value_path))
    delta = torch.zeros(width, device=device, requires_grad=True)
    logits_of, initial_value, mode = loop.step(vb, delta)
    optimiser = torch.optim.Adam([delta], lr=options.lr)
    initial_kl: torch.Tensor | None = None
    iterations, nll_value = 0, float("nan")
    with torch.enable_grad():
        for step in range(options.steps):
            logits = logits_of().float()  # [labels + 1, V]
            log_probs = torch.log_softmax(logits[:-1], dim=-1).gather(-1, vb.targets[:, None]).squeeze(-1)
            nll = -(torch.zeros(vb.n_rewrite, device=device).index_add(0, vb.row_of, log_probs) / vb.per_row).mean()
            kl_log_probs = torch.log_softmax(logits[-1:], dim=-1)
            if initial_kl is None:
                initial_kl = kl_log_probs.detach().clone()
            kl = options.kl_factor * F.kl_div(initial_kl, kl_log_probs, log_target=True, reduction="batchmean")
            norm = initial_value().norm()
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
    return (initial_value() + delta.detach()), {"iterations": iterations, "loss": nll_value, "loop": mode}


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
