"""The architecture matrix: a tiny random model of every decoder family people edit, built in code.

Each entry is a config recipe (hidden 64, 4 blocks, 4 heads) for ``AutoModelForCausalLM.from_config``, so
the whole matrix builds in seconds with no download. The test suite checks every piece of editkit that
depends on a model's layout (layer discovery, the split forward of the fast edit loops, the prefix cache,
module semantics such as activations and flattened FFN inputs) against each family's own forward, and
:func:`save_architecture` writes one as a model directory so that ``editkit compare --model DIR`` can be
tried on it like on any downloaded checkpoint.

The vocabulary is sized to a tokenizer the caller chooses: the byte tokenizer of :mod:`editkit.testing`
(258 tokens, fastest) or the default model's tokenizer (49,152 tokens, what ``save_architecture`` uses so
that the saved directory behaves like a real checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

HIDDEN = 64
LAYERS = 4
HEADS = 4
FFN = 128
POSITIONS = 512


def _llama_like(**extra: Any) -> Callable[[int, dict[str, int]], dict[str, Any]]:
    """Keys shared by the Llama-style families (Llama, Mistral, Qwen, Phi-3, Gemma, Mixtral)."""

    def build(vocab: int, ids: dict[str, int]) -> dict[str, Any]:
        return {
            "vocab_size": vocab,
            "hidden_size": HIDDEN,
            "intermediate_size": FFN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": HEADS // 2,
            "max_position_embeddings": POSITIONS,
            "tie_word_embeddings": False,
            **ids,
            **extra,
        }

    return build


def _gemma(**extra: Any) -> Callable[[int, dict[str, int]], dict[str, Any]]:
    # alternating sliding/full attention with a window shorter than an edit's rows, so the per-layer
    # attention type matters; soft-capping on (Gemma-2's official values)
    return _llama_like(
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * (LAYERS // 2),
        final_logit_softcapping=30.0,
        query_pre_attn_scalar=16,
        **extra,
    )


def _fixed(**keys: Any) -> Callable[[int, dict[str, int]], dict[str, Any]]:
    def build(vocab: int, ids: dict[str, int]) -> dict[str, Any]:
        return {"vocab_size": vocab, **ids, **keys}

    return build


def _gemma3_multimodal(vocab: int, ids: dict[str, int]) -> dict[str, Any]:
    text = _gemma(rope_local_base_freq=10000.0)(vocab + 3, ids)
    text["model_type"] = "gemma3_text"
    return {
        "text_config": text,
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        "mm_tokens_per_image": 4,
        # the image tokens sit past the text tokenizer's range, so no text token is taken for an image
        "image_token_index": vocab,
        "boi_token_index": vocab + 1,
        "eoi_token_index": vocab + 2,
        **ids,
    }


@dataclass(frozen=True)
class Architecture:
    """One family of the matrix: its ``model_type`` and a config recipe (vocabulary size, special ids)."""

    name: str
    model_type: str
    recipe: Callable[[int, dict[str, int]], dict[str, Any]]
    #: "single" (a plain decoder), "multimodal" (edited on its language model) or "moe"
    kind: str = "single"


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("gpt2", "gpt2", _fixed(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=POSITIONS)),
        Architecture("gptj", "gptj", _fixed(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, rotary_dim=8, n_positions=POSITIONS)),
        Architecture("gpt_neox", "gpt_neox", _fixed(
            hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=POSITIONS, tie_word_embeddings=False)),
        Architecture("llama", "llama", _llama_like()),
        Architecture("mistral", "mistral", _llama_like(sliding_window=None)),
        Architecture("qwen2", "qwen2", _llama_like()),
        Architecture("qwen3", "qwen3", _llama_like(head_dim=16)),
        Architecture("phi3", "phi3", _llama_like()),
        Architecture("gemma2", "gemma2", _gemma(attn_logit_softcapping=50.0)),
        Architecture("gemma3", "gemma3_text", _gemma(rope_local_base_freq=10000.0)),
        Architecture("opt", "opt", _fixed(
            hidden_size=HIDDEN, ffn_dim=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            word_embed_proj_dim=HIDDEN, max_position_embeddings=POSITIONS)),
        Architecture("falcon", "falcon", _fixed(
            hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, alibi=False,
            new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False)),
        Architecture("bloom", "bloom", _fixed(hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS)),
        Architecture("gemma3_multimodal", "gemma3", _gemma3_multimodal, kind="multimodal"),
        Architecture("mixtral", "mixtral", _llama_like(num_local_experts=4, num_experts_per_tok=2, sliding_window=None), kind="moe"),
    )
}

#: the plain decoders (the acceptance matrix of issue 16); the other two are the wrapper and the MoE
SINGLE = tuple(name for name, a in ARCHITECTURES.items() if a.kind == "single")


def _special_ids(tokenizer: Any) -> dict[str, int]:
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return {"eos_token_id": eos, "pad_token_id": pad, "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos}


def architecture_config(name: str, tokenizer: Any) -> Any:
    """The transformers config of matrix entry ``name``, its vocabulary sized to ``tokenizer``."""
    from transformers import AutoConfig

    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{name}'; the matrix has {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    keys = arch.recipe(len(tokenizer), _special_ids(tokenizer))
    return AutoConfig.for_model(arch.model_type, **keys)


def build_architecture(name: str, tokenizer: Any | None = None, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """A randomly initialised model of matrix entry ``name`` (float32, eval mode, ``sdpa`` attention
    where the family has it).

    Matrices are drawn at ``std`` (like :func:`editkit.testing.tiny_llama`): at the usual 0.02 a tiny model
    predicts nearly uniform logits and argmax-based scores become ties.
    """
    from transformers import AutoModelForCausalLM

    from .testing import tiny_tokenizer

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = architecture_config(name, tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=std)
    model.eval()
    return model


def default_tokenizer() -> Any:
    """The default model's tokenizer (converted once into editkit's cache)."""
    from transformers import AutoTokenizer

    from .models import ensure_default_model

    return AutoTokenizer.from_pretrained(ensure_default_model())


def save_architecture(name: str, directory: str | Path, seed: int = 0, tokenizer: Any | None = None) -> Path:
    """Write matrix entry ``name`` as a model directory (safetensors + tokenizer), vocabulary sized to the
    default model's tokenizer unless another is given; returns the directory."""
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    model = build_architecture(name, tokenizer, seed=seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------- the split forward, checked

_CHECK_PROMPTS = ("The capital of France is", "Who wrote Hamlet? The author", "Q: colour of the sky? A:")
_CHECK_TARGETS = (" Paris", " William Shakespeare", " blue")
_CHECK_PREFIXES = ("Alpha beta gamma", "One two")


def split_forward_differences(model: torch.nn.Module, tokenizer: Any, layer: int = 1) -> dict[str, float]:
    """Max |logit| difference between the split forward (:mod:`editkit.partial`) and the model's own full
    forward, with a random change added at block ``layer``'s FFN output: ``padded`` and ``packed`` rows, and
    ``prefix`` (the prefix-cache lower pass against the plain one, at the module and block outputs);
    ``additive`` is 1.0 where the block passes the change straight to its output (no post-FFN norm)."""
    from .batching import encode
    from .layers import down_proj_path, like_module_tensor
    from .partial import PackedRows, SplitForward
    from .prefix_cache import lower_after_prefixes, prefix_states

    split = SplitForward(model, down_proj_path(model, layer))
    if not split.possible:
        raise ValueError(f"no split forward: {split.reason}")
    batch = encode(tokenizer, list(_CHECK_PROMPTS), list(_CHECK_TARGETS))
    rows, cols = torch.nonzero(batch.target_labels() != -100, as_tuple=True)
    device = next(model.parameters()).device
    batch, rows, cols = batch.to(device), rows.to(device), cols.to(device)
    out: dict[str, float] = {}
    with torch.no_grad():
        lower = split.lower(batch)
        generator = torch.Generator().manual_seed(7)
        delta = torch.randn(lower.module_out.shape, generator=generator).to(lower.module_out)
        delta = delta * 0.5 * batch.attention_mask[..., None].to(delta.dtype)
        handle = split.module.register_forward_hook(lambda _m, _a, o: o + like_module_tensor(delta, o))
        try:
            full = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
            ).logits[rows, cols]
        finally:
            handle.remove()
        additive = split.output_is_additive(batch)
        padded = split.edited_logits(lower, delta, additive, batch.attention_mask, batch.position_ids, rows, cols)
        layout = PackedRows.of(batch)
        packed = split.edited_logits(
            layout.pack_lower(lower), layout.pack(delta), additive, None, layout.position_ids,
            torch.zeros_like(rows), layout.index[rows, cols],
        )  # fmt: skip
        out["padded"] = float((padded.float() - full.float()).abs().max())
        out["packed"] = float((packed.float() - full.float()).abs().max())
        out["additive"] = float(additive)
        texts = [_CHECK_PROMPTS[0], *(f"{p}. {_CHECK_PROMPTS[0]}" for p in _CHECK_PREFIXES)]
        prefixed = encode(tokenizer, texts, [_CHECK_TARGETS[0]] * len(texts), device=device)
        states = prefix_states(split, tokenizer, list(_CHECK_PREFIXES))
        reused = None if states is None else lower_after_prefixes(split, prefixed, states, [None, *range(len(_CHECK_PREFIXES))])
        if reused is None:
            out["prefix"] = float("nan")
        else:
            plain, ok = split.lower(prefixed), prefixed.attention_mask.bool()
            out["prefix"] = max(
                float((getattr(reused, n)[ok].float() - getattr(plain, n)[ok].float()).abs().max())
                for n in ("module_in", "module_out", "block_out")
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m editkit.architectures DIR [NAME ...]``: save the named entries (all by default) under DIR."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(f"usage: python -m editkit.architectures DIR [{'|'.join(ARCHITECTURES)} ...]", file=sys.stderr)
        return 2
    root, names = Path(args[0]), args[1:] or list(ARCHITECTURES)
    tokenizer = default_tokenizer()
    for name in names:
        print(save_architecture(name, root / name, tokenizer=tokenizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
