"""Hyper-parameters of the GRACE-like codebook (GRACE paper / EasyEdit ``hparams/GRACE``, LLaMA-2-7B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from editkit.checks import is_integer, is_number, parse_layer
from editkit.easyedit import KeyTable, choice, module_from_inner_params, only
from editkit.editor import EditorConfig
from editkit.errors import ConfigError

REPLACEMENTS = ("last", "prompt")
VALUE_INITS = ("cold", "warm")

#: the official layer, 27 of LLaMA-2-7B's 32, scaled to the model's depth when ``layer`` is None
OFFICIAL_LAYER, OFFICIAL_NUM_LAYERS = 27, 32


@dataclass
class GraceConfig(EditorConfig):
    """A codebook of (key, value, radius) entries at one FFN down-projection.

    ``layer``: ``None`` = the official depth scaled to this model; an integer = that block's
    down-projection; a dotted path = exactly that module. ``eps_init``: radius of a new key (Euclidean
    distance in the down-projection's input space). ``replacement``: ``last`` replaces the module's output
    at the last prompt token only, ``prompt`` at every prompt token. ``value_init``: ``cold`` = uniform
    random (seeded), ``warm`` = the module's own output at the key token. ``early_stop_loss``: an edit
    stops training once its loss is this low (0 disables). ``seed`` draws the cold values.
    """

    layer: int | str | None = None  # official layer 27/32, scaled
    eps_init: float = 1.0  # official; on zsre-dev every edit holds and no unrelated prompt falls inside a radius (docs/tuning)
    lr: float = 1.0  # official value learning rate (Adam)
    n_iter: int = 100  # official training steps per edit
    replacement: str = "last"  # official replace_last
    value_init: str = "cold"  # official cold start
    early_stop_loss: float = 1e-2  # stop once the edit is learnt: later steps cannot change its argmax
    seed: int = 0  # draws the cold values

    easyedit_alg_names: ClassVar[tuple[str, ...]] = ("GRACE",)
    #: the keys of EasyEdit's hparams/GRACE/*.yaml
    easyedit_keys: ClassVar[KeyTable] = {
        "inner_params": module_from_inner_params("layer"),
        "edit_lr": "lr",
        "n_iter": "n_iter",
        "eps": "eps_init",
        "replacement": choice("replacement", {"replace_last": "last", "replace_prompt": "prompt"}),
        "val_init": choice("value_init", {"cold": "cold", "warm": "warm"}),
        "dist_fn": only("euc"),  # Euclidean key distance
        "eps_expand": only("coverage"),  # a same-label key's radius grows to cover the new key
        "val_train": only("sgd"),  # values trained by gradient steps (no perturbation training)
        "reg": only("early_stop"),
        "val_reg": only(None, "None"),
        "dropout": only(0, 0.0),
        "num_pert": None,  # only used by perturbation training
    }

    def __post_init__(self) -> None:
        self.layer = parse_layer(self.layer, "GRACE")
        for name in ("eps_init", "lr"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                raise ConfigError(f"GRACE {name} must be a number > 0, not {value!r}")
        if not is_number(self.early_stop_loss) or self.early_stop_loss < 0:
            raise ConfigError(f"GRACE early_stop_loss must be a number >= 0, not {self.early_stop_loss!r}")
        if not is_integer(self.n_iter) or self.n_iter < 1:
            raise ConfigError(f"GRACE n_iter must be an integer >= 1, not {self.n_iter!r}")
        if self.replacement not in REPLACEMENTS:
            raise ConfigError(f"GRACE replacement must be one of {', '.join(REPLACEMENTS)}, not '{self.replacement}'")
        if self.value_init not in VALUE_INITS:
            raise ConfigError(f"GRACE value_init must be one of {', '.join(VALUE_INITS)}, not '{self.value_init}'")
        if not is_integer(self.seed):
            raise ConfigError(f"GRACE seed must be an integer, not {self.seed!r}")

