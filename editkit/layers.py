"""Finding the module an editor wraps, by dotted path or by relative depth, for any common decoder.

Official hyper-parameters name a layer of a specific model (MEMOIR: layer 27 of LLaMA-3-8B's 32); on
another model the same relative depth is used, so configs say "27 of 32" and this module scales it.
"""

from __future__ import annotations

import weakref

import torch

from .errors import ConfigError

# Where the list of decoder blocks lives, and the name of the FFN output projection inside a block.
_BLOCK_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "layers")
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
    for path in _BLOCK_LISTS:
        if _has(model, path) and isinstance(resolve_module(model, path), torch.nn.ModuleList):
            return path
    raise ConfigError(
        f"cannot find the decoder blocks of {type(model).__name__}; set the layer path explicitly"
    )


def num_layers(model: torch.nn.Module) -> int:
    return len(resolve_module(model, block_list_path(model)))


def scaled_layer(official_layer: int, official_num_layers: int, model: torch.nn.Module) -> int:
    """The layer at the same relative depth as ``official_layer`` of ``official_num_layers``."""
    n = num_layers(model)
    return min(n - 1, max(0, round(official_layer * n / official_num_layers)))


def down_proj_path(model: torch.nn.Module, layer: int) -> str:
    """Dotted path of the FFN output projection of block ``layer``."""
    blocks = block_list_path(model)
    n = len(resolve_module(model, blocks))
    if not 0 <= layer < n:
        raise ConfigError(f"layer {layer} does not exist: {type(model).__name__} has layers 0-{n - 1}")
    for name in _DOWN_PROJ:
        path = f"{blocks}.{layer}.{name}"
        if _has(model, path):
            return path
    raise ConfigError(f"cannot find the FFN output projection in {blocks}.{layer}; set the layer path explicitly")


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
