"""The architecture registry: every family folder is complete and consistent, and the
library reaches a family only through `assocjax.models.registry` (a family registered under
a new name runs everywhere, with no edit anywhere else)."""
import dataclasses
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from assocjax.models import CausalLM, forward_logits, from_hf, registry
from assocjax.models.gpt2 import FAMILY as GPT2
from assocjax.models.params import param_spec, params_to_hf, weight_plan
from assocjax.tune import LoraConfig, init_adapters, lora_inputs
from assocjax.tune.peft import adapter_config

PACKAGE = Path(__file__).resolve().parents[1] / "assocjax"
# a tiny config.json per family (a new family adds its own)
TINY = {
    "gpt2": dict(model_type="gpt2", n_embd=16, n_layer=2, n_head=2, n_positions=32, vocab_size=40),
    "llama": dict(model_type="llama", hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=40, max_position_embeddings=32),
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                     num_attention_heads=2, vocab_size=40, max_position_embeddings=32),
}


def test_names_and_model_types_are_unique():
    names = [f.name for f in registry.FAMILIES]
    types = [t for f in registry.FAMILIES for t in f.model_types]
    assert len(set(names)) == len(names) and len(set(types)) == len(types)
    assert registry.SUPPORTED == tuple(types)
    with pytest.raises(ValueError, match="unsupported model_type 'bert'; supported: " + ", ".join(types)):
        from_hf({"model_type": "bert"})


@pytest.mark.parametrize("fam", registry.FAMILIES, ids=lambda f: f.name)
def test_family_folder_is_consistent(fam):
    """config -> arch, every leaf has exactly one Hugging Face rule, the LoRA targets are
    block matrices with a PEFT module each, and names survive export -> load plan."""
    assert fam.name in TINY, f"add a tiny config.json for family {fam.name!r} to TINY"
    for untied in (False, True):
        cfg = from_hf({**TINY[fam.name], "tie_word_embeddings": not untied})
        assert cfg.arch == fam.name and registry.family(cfg) is fam
        spec = param_spec(cfg)
        leaves = {f"layers/{n}" for n in spec["layers"]} | {n for n in spec if n != "layers"}
        ruled = [r.ours for r in fam.rules] + ([fam.head.ours] if untied else [])
        assert sorted(ruled) == sorted(leaves)
        for r in fam.rules:
            assert ("{i}" in r.hf) == r.ours.startswith("layers/"), r
            assert r.transform in ("none", "transpose"), r
        assert fam.embedding in spec and spec[fam.embedding].role == "embedding"

        params = jax.tree.map(lambda p: np.zeros(p.shape, np.float32), spec,
                              is_leaf=lambda x: hasattr(x, "role"))
        hf = params_to_hf(cfg, params)
        plan = weight_plan(cfg, set(hf), "test")
        assert sorted(plan) == sorted(leaves)
    assert set(fam.lora_defaults) <= set(fam.lora_targets) and set(fam.peft_modules) == set(fam.lora_targets)
    for t in fam.lora_targets:
        assert spec["layers"][f"{t}_w"].role == "matrix" and re.fullmatch(r"\w+\.\w+", fam.peft_modules[t]), t


def _toy_family():
    """GPT-2 under a new name and model_type: what registering a new folder amounts to."""
    return dataclasses.replace(GPT2, name="toy", model_types=("toy",),
                               config=lambda c: dataclasses.replace(GPT2.config(c), arch="toy"))


def test_a_registered_family_runs_with_no_other_edit(monkeypatch):
    """Registered under a new name, the GPT-2 family's pieces give GPT-2's results through
    config, params, modeling, LoRA and PEFT export: nothing dispatches on the name."""
    toy = _toy_family()
    monkeypatch.setitem(registry._BY_NAME, "toy", toy)
    monkeypatch.setitem(registry._BY_MODEL_TYPE, "toy", toy)
    ref_cfg = from_hf(TINY["gpt2"])
    cfg = from_hf({**TINY["gpt2"], "model_type": "toy"})
    assert cfg == dataclasses.replace(ref_cfg, arch="toy")
    assert param_spec(cfg) == param_spec(ref_cfg)

    params = CausalLM(ref_cfg, rngs=nnx.Rngs(0)).param_tree()
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) % 40
    lora = LoraConfig(rank=2).for_model(cfg)
    assert lora.targets == GPT2.lora_defaults
    adapters = jax.tree.map(lambda a: a + 0.1, init_adapters(cfg, lora, jax.random.key(0)))
    ours = forward_logits(cfg, params, ids, lora=lora_inputs(params, adapters, lora))
    ref = forward_logits(ref_cfg, params, ids, lora=lora_inputs(params, adapters, lora))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    assert params_to_hf(cfg, params).keys() == params_to_hf(ref_cfg, params).keys()
    assert adapter_config(cfg, lora, "b") == adapter_config(ref_cfg, lora, "b")


def test_a_config_mapping_must_name_its_family(monkeypatch):
    bad = dataclasses.replace(_toy_family(), config=GPT2.config)  # returns arch="gpt2"
    monkeypatch.setitem(registry._BY_MODEL_TYPE, "toy", bad)
    with pytest.raises(ValueError, match="the toy config mapping returned arch 'gpt2'"):
        from_hf({**TINY["gpt2"], "model_type": "toy"}, "x/config.json")


def test_only_the_registry_dispatches_on_the_architecture():
    """No `arch ==` / `arch in` branch and no table indexed by `.arch` outside the registry
    (the per-family knowledge lives in the family folders)."""
    dispatch = re.compile(r"\barch\s*(==|!=|\bin\b|\bnot in\b)|\[[^\]]*\.arch\]")
    found = [f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
             for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "models" / "registry.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if dispatch.search(line)]
    assert not found, "\n".join(found)
