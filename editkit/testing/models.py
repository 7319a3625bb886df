"""Tiny, randomly initialised models for tests and examples (the "dummy model" of lm-evaluation-harness).

They build in milliseconds with no download, so the whole protocol and every method can be exercised in
unit tests; a plug-in author can run the conformance suite against them too.
"""

from __future__ import annotations

import torch


def tiny_tokenizer():
    """A byte-level tokenizer with no merges: every text tokenises, one token per byte, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def tiny_llama(
    seed: int = 0,
    vocab_size: int = 258,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
) -> torch.nn.Module:
    """A LlamaForCausalLM small enough to edit thousands of times a second on a CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=max(1, num_attention_heads // 2),
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 2,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # Random init at std 0.02 makes every logit nearly equal; a larger scale gives the tiny model
        # decisive, input-dependent predictions, so argmax-based scores are not ties.
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.2)
    model.eval()
    return model


def tiny_model_and_tokenizer(seed: int = 0):
    return tiny_llama(seed=seed), tiny_tokenizer()


class _Output(dict):
    """Dict-like model output with attribute access, like transformers' ModelOutput."""

    @property
    def logits(self) -> torch.Tensor:
        return self["logits"]


class BigramModel(torch.nn.Module):
    """A model whose next-token prediction is a lookup table on the current token.

    Its predictions are set by hand (``table[token] = next``), so scorer arithmetic can be checked on
    cases whose right answer is known exactly; it needs no cache, because the prediction depends on the
    last token only.
    """

    def __init__(self, vocab_size: int = 258, table: torch.Tensor | None = None):
        super().__init__()
        initial = table if table is not None else torch.zeros(vocab_size, dtype=torch.long)
        self.register_buffer("table", initial.clone())
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the module a device and a parameter

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None, **_):
        predicted = self.table[input_ids]
        logits = torch.nn.functional.one_hot(predicted, self.table.numel()).float() + self.dummy
        return _Output(logits=logits, cache=None)
