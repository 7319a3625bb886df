"""Finding the module an editor wraps, and what a hook on it sees, for every common decoder family.

Official hyper-parameters name a layer of a specific model (MEMOIR: layer 27 of LLaMA-3-8B's 32); on
another model the same relative depth is used, so configs say "27 of 32" and this module scales it.

Where the blocks live: ``model.layers`` (Llama, Mistral, Qwen, Phi-3, Gemma), ``transformer.h`` (GPT-2,
GPT-J, Falcon, Bloom), ``gpt_neox.layers``, ``model.decoder.layers`` (OPT), and the language model of a
multimodal wrapper (``model.language_model.layers``: Gemma-3 4B+, Mistral-3, Llama-4, Qwen2.5-VL). Inside a
block, the FFN's output projection is one of :data:`_DOWN_PROJ`; a mixture-of-experts FFN has none (its
experts are fused tensors) and is refused with the option to set.

Module semantics a hook must respect (the shared helpers at the end): the FFN's real activation is the
module's own (:func:`ffn_activation`; ``config.hidden_act`` is absent or wrong on GPT-2, OPT, Falcon, Bloom,
Gemma); OPT feeds its FFN flattened ``[B·T, D]`` tokens (:func:`tokens_3d`, :class:`TokenShape`); Falcon adds
the attention output into the FFN output in place (:func:`capture`).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch

from .errors import ConfigError

# Where the list of decoder blocks lives, and the name of the FFN output projection inside a block.
_BLOCK_LISTS = (
    "model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "model.language_model.layers",  # multimodal wrappers (Gemma-3, Mistral-3, Llama-4, Qwen2.5-VL)
    "model.language_model.model.layers",
    "language_model.model.layers",
    "model.text_model.layers",
    "layers",
)
_DOWN_PROJ = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc2", "fc2", "mlp.fc_out")

# The path each module was last resolved by, so that :func:`linear_weight_in_out` can name the path the user
# gave when it is not a Linear layer, without every editor having to pass the path along.
_RESOLVED_AS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def resolve_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The sub-module at ``path`` (e.g. ``model.layers.25.mlp.down_proj``), or a ConfigError naming the
    first part of the path that does not exist and what exists there instead."""
    module = model
    walked: list[str] = []
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            here = ".".join(walked) or "the model"
            if isinstance(module, torch.nn.ModuleList):
                options = f"{here} has {len(module)} entries (0-{len(module) - 1})"
            else:
                options = f"{here} has: {', '.join(children) or 'no sub-modules'}"
            raise ConfigError(f"layer path '{path}' does not exist: no '{part}' ({options})")
        module = children[part]
        walked.append(part)
    _RESOLVED_AS[module] = path
    return module


def _has(model: torch.nn.Module, path: str) -> bool:
    try:
        resolve_module(model, path)
    except ConfigError:
        return False
    return True


def block_list_path(model: torch.nn.Module) -> str:
    """Dotted path of the decoder's list of blocks, or a ConfigError naming the paths looked at."""
    for path in _BLOCK_LISTS:
        if _has(model, path) and isinstance(resolve_module(model, path), torch.nn.ModuleList):
            return path
    raise ConfigError(
        f"cannot find the decoder blocks of {type(model).__name__} (looked for {', '.join(_BLOCK_LISTS)}); "
        "set the method's layer option to a module path, e.g. --set layer=<blocks>.<N>.mlp.down_proj"
    )


def num_layers(model: torch.nn.Module) -> int:
    return len(resolve_module(model, block_list_path(model)))


def scaled_layer(official_layer: int, official_num_layers: int, model: torch.nn.Module) -> int:
    """The layer at the same relative depth as ``official_layer`` of ``official_num_layers``."""
    n = num_layers(model)
    return min(n - 1, max(0, round(official_layer * n / official_num_layers)))


def down_proj_path(model: torch.nn.Module, layer: int) -> str:
    """Dotted path of the FFN output projection of block ``layer``; a ConfigError (naming what was looked
    for and the ``layer`` option) when the block has none, e.g. a mixture-of-experts FFN."""
    blocks = block_list_path(model)
    n = len(resolve_module(model, blocks))
    if not 0 <= layer < n:
        raise ConfigError(f"layer {layer} does not exist: {type(model).__name__} has layers 0-{n - 1}")
    for name in _DOWN_PROJ:
        path = f"{blocks}.{layer}.{name}"
        if _has(model, path):
            return path
    block = resolve_module(model, f"{blocks}.{layer}")
    moe = next((f"{blocks}.{layer}.{n}" for n, m in block.named_modules() if _is_moe(m)), None)
    what = f"its FFN {moe} is a mixture of experts ({type(resolve_module(model, moe)).__name__}), which editkit does not edit" if moe else "no FFN output projection"
    raise ConfigError(
        f"cannot edit {blocks}.{layer}: {what} (looked for {', '.join(_DOWN_PROJ)}); "
        f"set the method's layer option to the path of a Linear layer, e.g. --set layer={blocks}.{layer}.<module>"
    )


def _is_moe(module: torch.nn.Module) -> bool:
    """A sparse mixture-of-experts FFN: a router (``gate``/``router``) next to ``experts``."""
    children = dict(module.named_children())
    return "experts" in children and bool({"gate", "router"} & set(children))


def linear_weight_in_out(module: torch.nn.Module) -> tuple[torch.Tensor, bool]:
    """The weight of a Linear or GPT-2 Conv1D and whether it is stored [in, out] (Conv1D) not [out, in].

    Anything else is refused, even with a ``weight`` (a norm's 1-D scale, an embedding table): an editor
    would otherwise train the wrong kind of tensor without a word.
    """
    conv1d = type(module).__name__ == "Conv1D"
    weight = getattr(module, "weight", None)
    if not (isinstance(module, torch.nn.Linear) or conv1d) or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        path = _RESOLVED_AS.get(module)
        where = f"layer path '{path}' is" if path else "the module is"
        raise ConfigError(f"{where} a {type(module).__name__}, not a Linear layer; give the path of a Linear such as an MLP down-projection")
    return weight, conv1d


# ---------------------------------------------------------------------------- module semantics for hooks


def capture(output: torch.Tensor) -> torch.Tensor:
    """A detached copy of a module's output, safe to keep after the forward moves on.

    ``detach()`` alone shares storage, and some blocks change their FFN output in place after the FFN
    returns (Falcon: ``mlp_output += attention_output``), which would silently change what was captured.
    """
    return output.detach().clone()


def tokens_3d(x: torch.Tensor, token_shape: tuple[int, int]) -> torch.Tensor:
    """``x`` as [B, T, ·] given the batch's (B, T): OPT's decoder layer flattens its FFN input to
    [B·T, D], every other family keeps [B, T, D]."""
    if x.dim() == 3:
        return x
    if x.dim() == 2 and x.shape[0] == token_shape[0] * token_shape[1]:
        return x.view(*token_shape, x.shape[-1])
    raise ValueError(f"cannot view a {tuple(x.shape)} tensor as tokens of a {token_shape} batch")


def like_module_tensor(y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``y`` [B, T, ·] back in the layout of ``reference`` (the tensor the module saw: [B, T, ·] or
    [B·T, ·]), for a hook that computed on the [B, T, ·] view and must return the module's layout."""
    y = y.to(reference.device)
    return y if reference.dim() == y.dim() else y.reshape(*reference.shape[:-1], y.shape[-1])


class TokenShape:
    """Remembers the (B, T) of the hidden states entering the block that holds a module, so that a hook
    on the module can view its flattened [B·T, D] input as [B, T, D] with :meth:`view` (OPT).

    Use as ``shape = TokenShape(model, module_path)`` next to the module hook, and ``shape.remove()``
    (or ``with TokenShape(...) as shape:``) when the hook goes.
    """

    def __init__(self, model: torch.nn.Module, module_path: str):
        blocks = block_list_path(model)
        head = module_path[len(blocks) + 1 :].split(".", 1)[0] if module_path.startswith(blocks + ".") else ""
        owner = resolve_module(model, f"{blocks}.{head}") if head.isdigit() else model
        self.shape: tuple[int, int] | None = None
        self._handle = owner.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_ids"))
        if isinstance(hidden, torch.Tensor) and hidden.dim() >= 2:
            self.shape = (int(hidden.shape[0]), int(hidden.shape[1]))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as [B, T, ·] (unchanged if it already is)."""
        if x.dim() == 3 or self.shape is None:
            return x
        return tokens_3d(x, self.shape)

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "TokenShape":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()


# child names under which the families keep their FFN activation (GPT-2/J/NeoX/Falcon ``act``, Llama/Gemma
# ``act_fn``, Phi-3/OPT ``activation_fn``, Bloom ``gelu_impl``)
_ACTIVATION_NAMES = ("act_fn", "act", "activation_fn", "activation", "gelu_impl", "activation_function")


def ffn_activation(model: torch.nn.Module, module_path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function the FFN around ``module_path`` really applies, taken from the module (the
    FFN's own, or the block's for OPT, where it sits on the decoder layer), not from ``config.hidden_act``,
    which is absent (Gemma-2/3 call it ``hidden_activation``, GPT-2 ``activation_function``) or another
    key's default on many families. A ConfigError when neither the FFN nor its block has one."""
    parts = module_path.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # the module's parent (the FFN), then the block, upwards
        owner = resolve_module(model, ".".join(parts[:depth]))
        for name in _ACTIVATION_NAMES:
            candidate = getattr(owner, name, None)
            if callable(candidate) and not isinstance(candidate, (torch.nn.Linear, torch.nn.ModuleList)):
                return candidate
        if isinstance(owner, torch.nn.ModuleList):
            break
    raise ConfigError(f"cannot find the activation function of the FFN around {module_path} (looked for {', '.join(_ACTIVATION_NAMES)})")
