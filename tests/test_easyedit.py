"""EasyEdit hparams files as method configs: each method's table maps the keys it knows, --set wins."""

from __future__ import annotations

import json
from pathlib import Path

from editkit.cli import main
from editkit.easyedit import config_overrides, read_hparams
from editkit.registry import get_editor_spec

FIXTURES = Path(__file__).parent / "fixtures" / "easyedit"
RUN_KEYS_IN_FILES = ["alg_name", "model_name", "device"]


def overrides(method: str, name: str) -> tuple[dict, list[str]]:
    spec = get_editor_spec(method)
    return config_overrides(spec.editor_class.config_class, read_hparams(FIXTURES / name), name, method)


def test_memoir_keys():
    values, unused = overrides("memoir", "memoir-tiny.yaml")
    assert values == {"layer": "model.layers.2.mlp.down_proj", "lr": 0.5, "n_iter": 4, "k": 16, "tau": 0.6, "aggregation": "mean"}
    assert unused[:3] == RUN_KEYS_IN_FILES and "dir_background_features" in unused
    assert "use_chat_template" not in unused  # a run option editkit reads (see test_chat_template.py)


def test_ft_keys_layer_template_and_objective():
    values, unused = overrides("ft", "ft-tiny.yaml")
    config = get_editor_spec("ft").make_config(**values)
    assert (config.layer, config.steps, config.lr, config.objective) == ("model.layers.1.mlp.down_proj", 7, 5e-3, "ft-l")
    assert config.norm_constraint is None and config.weight_decay == 0
    assert "rewrite_module_tmp" in unused and "lm_head_module" in unused and "kl_factor" not in unused


def test_run_and_compare_read_hparams(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"Item {i} is", "target": f"thing {i}"}) + "\n" for i in range(2)))
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--no-progress"]
    main(["run", "memoir", "--hparams", str(FIXTURES / "memoir-tiny.yaml"), "--set", "tau=0.7", *common, "--out", str(tmp_path / "run")])
    config = json.loads((tmp_path / "run" / "config.json").read_text())["method_config"]
    assert (config["layer"], config["k"], config["tau"], config["n_iter"]) == ("model.layers.2.mlp.down_proj", 16, 0.7, 4)
    assert "memoir-tiny.yaml: not used: alg_name, model_name, device" in capsys.readouterr().err

    main(["compare", "--methods", "ft,memoir", "--hparams", f"ft={FIXTURES / 'ft-tiny.yaml'}", "--set", "ft.steps=3",
          "--hparams", f"memoir={FIXTURES / 'memoir-tiny.yaml'}", *common, "--out", str(tmp_path / "cmp")])  # fmt: skip
    ft = json.loads((tmp_path / "cmp" / "ft" / "config.json").read_text())["method_config"]
    memoir = json.loads((tmp_path / "cmp" / "memoir" / "config.json").read_text())["method_config"]
    assert (ft["layer"], ft["objective"], ft["steps"]) == ("model.layers.1.mlp.down_proj", "ft-l", 3)
    assert (memoir["k"], memoir["tau"]) == (16, 0.6)


def test_grace_keys():
    values, unused = overrides("grace", "grace-tiny.yaml")
    config = get_editor_spec("grace").make_config(**values)
    assert (config.layer, config.lr, config.n_iter, config.eps_init) == ("model.layers.2.mlp.down_proj", 0.5, 20, 3.0)
    assert (config.replacement, config.value_init) == ("prompt", "warm")
    assert "num_pert" in unused


def test_wise_keys():
    values, _ = overrides("wise", "wise-tiny.yaml")
    config = get_editor_spec("wise").make_config(**values)
    assert (config.layer, config.lr, config.n_iter, config.mask_ratio) == ("model.layers.3.mlp.down_proj", 0.5, 12, 0.3)
    assert (config.alpha, config.beta, config.gamma, config.act_ratio, config.norm_constraint) == (2.0, 8.0, 4.0, 0.9, 0.5)
    assert (config.shard_size, config.merge_every, config.merge_density, config.retrieve) == (2, 4, 0.5, True)
