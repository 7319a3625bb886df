"""Hyper-parameters the locate-then-edit methods share, and how EasyEdit's hparams keys map onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from editkit.checks import is_integer, is_number
from editkit.easyedit import KeyTable, only
from editkit.editor import EditorConfig
from editkit.errors import ConfigError


def _module_template(value: Any, _hparams: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, str) or "{}" not in value:
        raise ConfigError(f"expected a module name with {{}} for the layer, e.g. model.layers.{{}}.mlp.down_proj, not {value!r}")
    return {"module_template": value.removesuffix(".weight")}


#: EasyEdit keys every locate-then-edit method reads the same way; ``None``: known, not used by editkit
#: (module names it finds itself, the statistics' source and size, which are its own, see editkit/locate/stats.py)
SHARED_KEYS: KeyTable = {
    "layers": "layers",
    "rewrite_module_tmp": _module_template,
    "v_num_grad_steps": "v_num_grad_steps",
    "v_lr": "v_lr",
    "v_weight_decay": "v_weight_decay",
    "clamp_norm_factor": "clamp_norm_factor",
    "kl_factor": "kl_factor",
    "mom2_adjustment": "mom2_adjustment",
    "mom2_update_weight": "mom2_update_weight",
    "context_template_length_params": "context_template_length_params",
    "fact_token": only("subject_last"),
    "layer_selection": only("all"),
    # v* is read at the model's own output, which is what EasyEdit's files ask for (the last layer)
    **dict.fromkeys(("v_loss_layer", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp", "ln_f_module", "lm_head_module")),
    # editkit's statistics: a generated corpus, mom2_samples texts, float64 sums, its own cache
    **dict.fromkeys(("mom2_dataset", "mom2_n_samples", "mom2_dtype", "stats_dir", "fp16", "P_loc")),
}


@dataclass
class LocateConfig(EditorConfig):
    """Shared fields, with the defaults of EasyEdit's ``hparams/MEMIT/llama-7b.yaml`` (ROME's LLaMA-3 file
    has the same v* options); each method's subclass changes what its own file sets otherwise.

    ``layers``: the edited blocks (``None`` = the official ones of a 32-layer LLaMA, at the same relative
    depth of this model). ``module_template``: the edited Linear's path with ``{}`` for the layer (``None``
    = the block's FFN output projection, found by name). ``mom2_samples``: generated texts the second
    moments are computed over (``editkit/locate/corpus.py``; 128 tokens each). ``seed``: the context
    templates' sampling seed. ``mom2_update_weight`` λ weighs the generic keys' ``C`` against the batch's
    ``K Kᵀ``; a key's Mahalanobis norm ``kᵀC⁻¹k`` grows with the MLP width ``d``, so the share of an edit a
    fixed λ lets through falls as ``d / λ``: the official 15000 (for LLaMA-7B, ``d`` = 11008) is scaled by
    ``d / 11008`` when ``None`` (2093 for the default model's 1536).
    """

    layers: list[int] | None = None
    module_template: str | None = None
    v_num_grad_steps: int = 25
    v_lr: float = 5e-1
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_adjustment: bool = True
    mom2_update_weight: float | None = None  # None: 15000 (LLaMA-7B's 11008-wide MLP) x this MLP's width / 11008
    mom2_samples: int = 200
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[10, 5]])
    seed: int = 0

    easyedit_keys: ClassVar[KeyTable] = SHARED_KEYS

    def __post_init__(self) -> None:
        name = type(self).__name__
        layers = self.layers
        if layers is not None and (not isinstance(layers, list) or not layers or not all(is_integer(x) for x in layers)):
            raise ConfigError(f"{name} layers must be None or a non-empty list of block indices, not {layers!r}")
        template = self.module_template
        if template is not None and (not isinstance(template, str) or "{}" not in template):
            raise ConfigError(f"{name} module_template must be None or a module path with {{}} for the layer, not {template!r}")
        checks = {
            "v_num_grad_steps": is_integer(self.v_num_grad_steps) and self.v_num_grad_steps >= 1,
            "v_lr": is_number(self.v_lr) and self.v_lr > 0,
            "v_weight_decay": is_number(self.v_weight_decay) and self.v_weight_decay >= 0,
            "clamp_norm_factor": is_number(self.clamp_norm_factor) and self.clamp_norm_factor > 0,
            "kl_factor": is_number(self.kl_factor) and self.kl_factor >= 0,
            "mom2_update_weight": self.mom2_update_weight is None or (is_number(self.mom2_update_weight) and self.mom2_update_weight >= 0),
            "mom2_samples": is_integer(self.mom2_samples) and self.mom2_samples >= 1,
            "mom2_adjustment": isinstance(self.mom2_adjustment, bool),
            "seed": is_integer(self.seed),
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name} {key} has an invalid value {getattr(self, key)!r}")
        params = self.context_template_length_params
        if not isinstance(params, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(is_integer(x) and x >= 1 for x in p) for p in params
        ):
            raise ConfigError(f"{name} context_template_length_params must be a list of [tokens, count] pairs, not {params!r}")
