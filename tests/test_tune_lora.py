"""LoRA adapters, PEFT export/import and frozen-layer tuning, against float64 numpy,
transformers + PEFT (logits and gradients) and full-tree gradients."""
import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assocjax.models import forward_logits, load_pretrained
from assocjax.models.common import Adapter, dense
from assocjax.models.registry import family
from assocjax.tune import (TARGETS, LoraConfig, frozen_params, init_adapters, join, load_peft, lora_inputs, merge,
                           parse_layers, save_peft, split_trainable)
from conftest import save_peft_adapter, save_tiny

import peft  # noqa: E402  (test extras: a missing one must fail, not skip)
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

IDS = np.random.default_rng(0).integers(0, 101, (2, 9))
WEIGHTS = np.random.default_rng(1).normal(size=(2, 9, 101)).astype(np.float32)  # loss = sum(logits * WEIGHTS)
# GPT-2 adapts attn.c_proj ("out") but not mlp.c_proj ("proj"): the export must tell the two apart
LORAS = {"llama": LoraConfig(rank=4, alpha=6.0, targets=TARGETS["llama"]),
         "gpt2": LoraConfig(rank=4, alpha=6.0, targets=("qkv", "out", "fc"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    out = {}
    for kind in ("llama", "gpt2"):
        folder = save_tiny(kind, root / kind)
        model, _ = load_pretrained(folder, tokenizer=False)
        out[kind] = (folder, model.cfg, model.param_tree())
    return out


def random_adapters(cfg, lora, seed=0):
    """Adapters with random nonzero B (fresh ones have B = 0 and would hide errors)."""
    ad = init_adapters(cfg, lora, jax.random.key(seed))
    rng = np.random.default_rng(seed + 1)
    return {"layers": {n: (jnp.asarray(0.3 * rng.normal(size=a.shape), jnp.float32) if n.endswith("_b") else a)
                       for n, a in ad["layers"].items()}}


def peft_model(base_folder, adapter_folder, trainable=False):
    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    return peft.PeftModel.from_pretrained(base, adapter_folder, is_trainable=trainable).eval()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lora_forward_matches_merge_and_float64_reference(models, kind):
    _, cfg, params = models[kind]
    lora = LORAS[kind]
    ad = random_adapters(cfg, lora)
    adapted = np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, lora)))
    merged = np.asarray(forward_logits(cfg, merge(params, ad, lora), IDS))
    np.testing.assert_allclose(adapted, merged, atol=1e-5, rtol=1e-5)
    assert np.abs(adapted - np.asarray(forward_logits(cfg, params, IDS))).max() > 1e-2  # the adapters do act

    # One layer's weight products: x @ W + (alpha / r) * x @ A @ B in float64 numpy.
    w = {t: params["layers"][f"{t}_w"][1] for t in lora.targets}
    ab = {t: (ad["layers"][f"{t}_lora_a"][1], ad["layers"][f"{t}_lora_b"][1]) for t in lora.targets}
    xs = {t: np.random.default_rng(3).normal(size=(2, 5, w[t].shape[0])) for t in lora.targets}
    products = jax.jit(lambda w, ab, xs: {t: dense(x, w[t], Adapter(*ab[t], jnp.float32(1.5), None, None))
                                          for t, x in xs.items()})
    ours = products(w, ab, {t: jnp.asarray(x, jnp.float32) for t, x in xs.items()})
    for t, x in xs.items():
        w64, a, b = (np.asarray(m, np.float64) for m in (w[t], *ab[t]))
        np.testing.assert_allclose(ours[t], x @ w64 + 1.5 * (x @ a) @ b, atol=1e-5, rtol=1e-5, err_msg=t)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_fresh_adapters_leave_the_model_unchanged(models, kind):
    _, cfg, params = models[kind]
    lora = LoraConfig(rank=4, dropout=0.5, targets=TARGETS[kind])
    ad = init_adapters(cfg, lora, jax.random.key(0))
    a = np.asarray(ad["layers"][f"{lora.targets[0]}_lora_a"])
    bound = 1 / np.sqrt(cfg.hidden)  # PEFT's lora_A init: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound and abs(a.mean()) < 0.1 * bound
    assert all(not np.asarray(v).any() for n, v in ad["layers"].items() if n.endswith("_b"))
    base = np.asarray(forward_logits(cfg, params, IDS))
    # LLaMA: bitwise equal. GPT-2: XLA simplifies the plain graph's attention-output product
    # differently once a second product reads the same input, a float32-rounding difference.
    same = np.testing.assert_array_equal if kind == "llama" else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6))
    same(np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, lora))), base)
    # dropout acts on the LoRA branch's input only: with B = 0 it cannot change the output
    with_dropout = lora_inputs(params, ad, lora, dropout_key=jax.random.key(1))
    same(np.asarray(forward_logits(cfg, params, IDS, lora=with_dropout)), base)


def test_dropout_is_deterministic_per_key(models):
    _, cfg, params = models["llama"]
    lora = dataclasses.replace(LORAS["llama"], dropout=0.3)
    ad = random_adapters(cfg, lora)
    run = lambda key, lc=lora: np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, lc, key)))
    plain = run(None)
    k1, k2 = run(jax.random.key(1)), run(jax.random.key(2))
    assert np.abs(k1 - plain).max() > 1e-3 and np.abs(k1 - k2).max() > 1e-3
    np.testing.assert_array_equal(run(jax.random.key(1)), k1)
    np.testing.assert_array_equal(run(jax.random.key(1), LORAS["llama"]), plain)  # rate 0: the key changes nothing


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_peft_export_loads_in_transformers_with_same_logits_and_grads(models, kind, tmp_path):
    folder, cfg, params = models[kind]
    lora = LORAS[kind]
    ad = random_adapters(cfg, lora)
    out = save_peft(tmp_path / "adapter", cfg, ad, lora, base_model_name_or_path=str(folder))
    conf = json.loads((out / "adapter_config.json").read_text())
    assert (conf["peft_type"], conf["task_type"], conf["r"], conf["lora_alpha"]) == ("LORA", "CAUSAL_LM", 4, 6)
    assert conf["fan_in_fan_out"] == (kind == "gpt2") and conf["base_model_name_or_path"] == str(folder)

    pm = peft_model(folder, out, trainable=True)
    adapted = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lora_A")}
    prefix = "model.layers" if kind == "llama" else "transformer.h"
    modules_hf = family(kind).peft_modules

    assert adapted == {f"{prefix}.{i}.{modules_hf[t]}" for i in range(cfg.n_layers) for t in lora.targets}
    logits_ref = pm(torch.tensor(IDS)).logits
    ours = lambda adapters: forward_logits(cfg, params, IDS, lora=lora_inputs(params, adapters, lora))
    np.testing.assert_allclose(np.asarray(ours(ad)), logits_ref.detach().numpy(), atol=1e-4, rtol=1e-4)

    # gradients w.r.t. the adapters only (the base tree is closed over)
    (logits_ref * torch.tensor(WEIGHTS)).sum().backward()
    grads = jax.grad(lambda a: jnp.sum(ours(a) * WEIGHTS))(ad)["layers"]
    modules = dict(pm.named_modules())
    for t in lora.targets:
        for i in range(cfg.n_layers):
            m = modules[f"base_model.model.{prefix}.{i}.{modules_hf[t]}"]
            for end, ref in (("a", m.lora_A["default"].weight.grad), ("b", m.lora_B["default"].weight.grad)):
                g = np.asarray(grads[f"{t}_lora_{end}"][i]).T
                scale = np.abs(ref.numpy()).max()
                np.testing.assert_allclose(g, ref.numpy(), atol=1e-4 * scale, rtol=1e-4, err_msg=f"{t} {end} {i}")

    back, lora_back = load_peft(out, cfg)
    assert lora_back == lora
    for n, a in ad["layers"].items():
        np.testing.assert_array_equal(back["layers"][n], np.asarray(a))


def test_peft_made_adapter_loads(models, tmp_path):
    """An adapter trained and saved by PEFT itself, adapting only some layers."""
    folder, cfg, params = models["llama"]
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    conf = peft.LoraConfig(r=2, lora_alpha=5, target_modules=["k_proj", "down_proj"], layers_to_transform=[0, 2],
                           task_type="CAUSAL_LM")
    pm = save_peft_adapter(base, conf, tmp_path / "peft")
    ad, lora = load_peft(tmp_path / "peft", cfg)
    assert lora == LoraConfig(rank=2, alpha=5.0, dropout=0.0, targets=("k", "down"))
    assert not np.asarray(ad["layers"]["k_lora_b"][1]).any()  # layer 1 is not adapted
    with torch.no_grad():
        ref = pm.eval()(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, lora))), ref,
                               atol=1e-4)


def test_bad_input_errors(models, tmp_path):
    _, cfg, params = models["gpt2"]
    with pytest.raises(ValueError, match=r"\['q'\].*qkv, out, fc, proj"):
        init_adapters(cfg, LoraConfig(targets=("q", "qkv")), jax.random.key(0))
    with pytest.raises(ValueError, match="q, k, v, o, gate, up, down"):
        init_adapters(models["llama"][1], LoraConfig(targets=("c_attn",)), jax.random.key(0))
    with pytest.raises(ValueError, match="dropout"):
        LoraConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"targets is empty here: fill in the model's defaults .*\['qkv'\]"):
        lora_inputs(params, init_adapters(cfg, LoraConfig(), jax.random.key(0)), LoraConfig())  # init fills them in
    with pytest.raises(ValueError, match="expected"):  # rank mismatch between adapters and config
        lora_inputs(params, init_adapters(cfg, LoraConfig(rank=2, targets=("qkv",)), jax.random.key(0)),
                    LoraConfig(rank=4, targets=("qkv",)))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_peft(tmp_path, cfg)
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("0,3", 3)


def test_gpt2_target_modules_name_exactly_the_chosen_modules(models):
    """attn.c_proj ("out") and mlp.c_proj ("proj") share a name; PEFT matches a string
    target_modules with re.fullmatch against the full module name, a list by name suffix."""
    from assocjax.tune.peft import adapter_config

    cfg = models["gpt2"][1]
    modules_hf = family("gpt2").peft_modules
    names = [f"transformer.h.{i}.{m}" for i in range(2) for m in modules_hf.values()]
    for targets in [("out",), ("proj",), ("qkv", "out"), ("fc", "proj"), ("qkv", "out", "fc", "proj")]:
        tm = adapter_config(cfg, LoraConfig(targets=targets), "base")["target_modules"]
        if isinstance(tm, str):
            hit = {n for n in names if re.fullmatch(tm, n)}
        else:
            hit = {n for n in names if n.split(".")[-1] in tm}
        assert hit == {f"transformer.h.{i}.{modules_hf[t]}" for i in range(2) for t in targets}, targets


def test_parse_layers():
    assert parse_layers("last:2", 5) == (3, 4)
    assert parse_layers("first:2", 5) == (0, 1)
    assert parse_layers("3, 0,-1", 5) == (0, 3, 4)
    assert parse_layers([4, 1], 5) == (1, 4)
    assert parse_layers("all", 3) == (0, 1, 2)


def _scans(jaxpr):
    """(length, dot_general count) of every lax.scan in a jaxpr, nested calls included."""
    def subs(eqn):
        for v in eqn.params.values():
            for x in v if isinstance(v, (tuple, list)) else (v,):
                if hasattr(x, "jaxpr") and hasattr(x, "consts"):
                    yield x.jaxpr
                elif type(x).__name__ == "Jaxpr":
                    yield x

    def dots(j):
        return sum(e.primitive.name == "dot_general" for e in j.eqns) + sum(dots(s) for e in j.eqns for s in subs(e))

    out = []
    for e in jaxpr.eqns:
        if e.primitive.name == "scan":
            out.append((e.params["length"], dots(e.params["jaxpr"].jaxpr)))
        else:
            for s in subs(e):
                out += _scans(s)
    return out


def test_plain_forward_has_no_lora_ops(models):
    """Without adapters each scanned block holds only its weight products (7 for LLaMA) and
    the 2 attention products; adapters on q and v add their 2 x 2 products."""
    _, cfg, params = models["llama"]
    lora = LoraConfig(rank=2, targets=("q", "v"))
    ad = init_adapters(cfg, lora, jax.random.key(0))
    plain = _scans(jax.make_jaxpr(lambda p: forward_logits(cfg, p, IDS))(params).jaxpr)
    adapted = _scans(jax.make_jaxpr(lambda p, a: forward_logits(cfg, p, IDS, lora=lora_inputs(p, a, lora)))(
        params, ad).jaxpr)
    assert plain == [(cfg.n_layers, len(TARGETS["llama"]) + 2)]
    assert adapted == [(cfg.n_layers, len(TARGETS["llama"]) + 2 + 4)]


@pytest.fixture(scope="module")
def frozen_setup(models):
    _, cfg, params = models["llama"]  # 3 blocks
    loss_full = lambda p: jnp.sum(forward_logits(cfg, p, IDS) * WEIGHTS)
    return cfg, params, jax.value_and_grad(loss_full)(params), loss_full


@pytest.mark.parametrize("spec", ["last:1", "0,2"])
def test_frozen_grads_equal_slices_of_full_grads(frozen_setup, spec):
    cfg, params, (full_loss, full_grads), _ = frozen_setup
    layers = parse_layers(spec, cfg.n_layers)
    trainable, frozen = split_trainable(params, layers)
    jax.tree.map(np.testing.assert_array_equal, join(trainable, frozen), params)
    loss = lambda t: jnp.sum(forward_logits(cfg, frozen_params(t, frozen), IDS) * WEIGHTS)
    value, grads = jax.value_and_grad(loss)(trainable)
    np.testing.assert_allclose(value, full_loss, rtol=1e-6)
    expected, _ = split_trainable(full_grads, layers)
    assert jax.tree.structure(grads) == jax.tree.structure(expected)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, atol=1e-5, rtol=1e-5), grads, expected)


def test_frozen_backward_skips_frozen_blocks(frozen_setup):
    """The backward pass never enters the frozen prefix and forms no weight gradient for a
    frozen block: counted in the jaxpr (one scan per run of blocks)."""
    cfg, params, _, loss_full = frozen_setup
    n = cfg.n_layers
    n_weights = len(TARGETS["llama"])  # weight products per block = weight gradients a trainable block adds
    # last block trainable: the frozen prefix (length n - 1) only appears as its forward scan
    trainable, frozen = split_trainable(params, (n - 1,))
    loss = lambda t: jnp.sum(forward_logits(cfg, frozen_params(t, frozen), IDS) * WEIGHTS)
    fwd = _scans(jax.make_jaxpr(loss)(trainable).jaxpr)
    assert [s for s in fwd if s[0] == n - 1] == [(n - 1, fwd[0][1])]
    bwd = _scans(jax.make_jaxpr(jax.grad(loss))(trainable).jaxpr)
    assert [s for s in bwd if s[0] == n - 1] == [(n - 1, fwd[0][1])]
    trainable_bwd = max(d for length, d in bwd if length == 1)
    assert trainable_bwd > 2 * fwd[0][1] - 3  # the suffix does have its backward (dx + dW)
    full = _scans(jax.make_jaxpr(jax.grad(loss_full))(params).jaxpr)
    assert sorted(full) == [(n, fwd[0][1]), (n, trainable_bwd)]  # what a full-tree gradient costs
    # blocks 0 and 2 trainable: block 1's backward carries dx only (n_weights fewer products)
    trainable, frozen = split_trainable(params, (0, 2))
    loss = lambda t: jnp.sum(forward_logits(cfg, frozen_params(t, frozen), IDS) * WEIGHTS)
    counts = sorted(d for _, d in _scans(jax.make_jaxpr(jax.grad(loss))(trainable).jaxpr))
    f = fwd[0][1]
    assert counts == sorted([f, f, f, trainable_bwd - n_weights, trainable_bwd, trainable_bwd])
