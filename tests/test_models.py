import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from assocjax.models import forward_hidden, from_hf, load_pretrained
from assocjax.models.loading import SafetensorsReader, check_weights, load_tokenizer, resolve
from conftest import SHARED, save_random_llama, save_tiny


def hf_outputs(folder, ids, mask=None):
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    kw = {}
    if mask is not None:
        kw = dict(attention_mask=torch.tensor(mask), position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0)))
    with torch.no_grad():
        out = hf(torch.tensor(ids), output_hidden_states=True, **kw)
    return np.stack([h.numpy() for h in out.hidden_states]), out.logits.numpy()


IDS = np.random.default_rng(0).integers(0, 101, (2, 11))


@pytest.mark.parametrize("name", ["gpt2", "gpt2_untied", "llama_gqa", "llama_tied_mha", "llama_bf16", "llama_sharded"])
def test_hidden_states_and_logits_match_transformers(checkpoints, name):
    model, _ = load_pretrained(checkpoints[name], tokenizer=False)
    hs_ref, logits_ref = hf_outputs(checkpoints[name], IDS)
    hs = np.asarray(model.hidden_states(IDS))
    assert hs.shape == (model.cfg.n_layers + 1, 2, 11, 32) == hs_ref.shape
    np.testing.assert_allclose(hs, hs_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(model(IDS)), logits_ref, atol=1e-4, rtol=1e-4)


def test_hidden_state_convention(checkpoints):
    """Entry 0 = embeddings, last = after the final norm (not the last block's raw output)."""
    model, _ = load_pretrained(checkpoints["gpt2"], tokenizer=False)
    p = model.param_tree()
    hs = np.asarray(model.hidden_states(IDS[:1]))
    np.testing.assert_allclose(hs[0], p["wte"][IDS[:1]] + p["wpe"][np.arange(11)], atol=1e-6)
    # Last entry = final norm applied to the last block's output (that raw output is not returned).
    from assocjax.models.common import layer_norm
    from assocjax.models.gpt2.modeling import block as gpt2_block
    from assocjax.models.modeling import positions_and_mask

    positions, allowed = positions_and_mask(jnp.asarray(IDS[:1]), None)
    last_layer = jax.tree.map(lambda a: a[-1], p["layers"])
    out, _ = gpt2_block(model.cfg, last_layer, jnp.asarray(hs[-2]), positions, allowed)
    np.testing.assert_allclose(hs[-1], layer_norm(out, p["lnf_scale"], p["lnf_bias"], model.cfg.norm_eps), atol=1e-5)
    assert not np.allclose(hs[-1], out, atol=1e-2)


def test_old_style_top_level_rope_theta(checkpoints, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(checkpoints["llama_sharded"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    (folder / "config.json").write_text(json.dumps(cfg))
    model, _ = load_pretrained(folder, tokenizer=False)
    assert model.cfg.rope_theta == 500.0
    new, _ = load_pretrained(checkpoints["llama_sharded"], tokenizer=False)
    np.testing.assert_array_equal(np.asarray(model(IDS)), np.asarray(new(IDS)))
    _, logits_ref = hf_outputs(folder, IDS)
    np.testing.assert_allclose(np.asarray(model(IDS)), logits_ref, atol=1e-4)


def test_bfloat16_compute_is_close(checkpoints):
    model, _ = load_pretrained(checkpoints["llama_bf16"], dtype=jnp.bfloat16, tokenizer=False)
    assert model.param_tree()["layers"]["q_w"].dtype == jnp.bfloat16
    _, logits_ref = hf_outputs(checkpoints["llama_bf16"], IDS)
    err = np.abs(np.asarray(model(IDS)) - logits_ref).max() / np.abs(logits_ref).max()
    assert err < 3e-2  # bfloat16 keeps ~3 significant digits


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_padding_does_not_change_real_positions(checkpoints, name):
    model, _ = load_pretrained(checkpoints[name], tokenizer=False)
    short = IDS[:1, :7]
    alone = np.asarray(model.hidden_states(short))[:, 0]
    left = np.concatenate([np.full((1, 4), 5), short], 1)
    right = np.concatenate([short, np.full((1, 4), 5)], 1)
    pad_mask = np.r_[np.zeros(4), np.ones(7)][None].astype(int)
    hl = np.asarray(model.hidden_states(left, pad_mask))[:, 0, 4:]
    hr = np.asarray(model.hidden_states(right, pad_mask[:, ::-1].copy()))[:, 0, :7]
    np.testing.assert_allclose(hl, alone, atol=1e-5)
    np.testing.assert_allclose(hr, alone, atol=1e-5)
    batch = np.concatenate([left, IDS[1:, :11]], 0)
    mask = np.concatenate([pad_mask, np.ones((1, 11), int)], 0)
    hs_ref, _ = hf_outputs(checkpoints[name], batch, mask)
    hb = np.asarray(model.hidden_states(batch, mask))
    np.testing.assert_allclose(hb[:, 0, 4:], hs_ref[:, 0, 4:], atol=1e-4)
    np.testing.assert_allclose(hb[:, 1], hs_ref[:, 1], atol=1e-4)


def test_layers_are_scanned_so_the_program_does_not_grow_with_depth(tmp_path):
    sizes = []
    for n in (2, 6):
        model, _ = load_pretrained(save_tiny("llama", tmp_path / f"l{n}", num_hidden_layers=n), tokenizer=False)
        jaxpr = jax.make_jaxpr(lambda p, i: forward_hidden.__wrapped__(model.cfg, p, i))(model.param_tree(), IDS)
        sizes.append(len(jaxpr.eqns[0].params["jaxpr"].eqns) if jaxpr.eqns[0].primitive.name == "pjit" else len(jaxpr.eqns))
        assert "scan" in str(jaxpr)
    assert sizes[0] == sizes[1]


def test_real_gpt2_tokenizer(checkpoints, tmp_path):
    tok_dir = SHARED / "tokenizers" / "gpt2"
    if not tok_dir.is_dir():
        pytest.skip("../shared/tokenizers/gpt2 not present")
    folder = tmp_path / "with_tok"
    shutil.copytree(checkpoints["gpt2"], folder)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / f, folder / f)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg))
    _, tok = load_pretrained(folder)
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert len(tok) == 50257
    text = "The pie-man, said the Times, 'struck again'."
    assert tok.decode(tok(text)["input_ids"]) == text


def test_damaged_tokenizer_file_is_named(tmp_path):
    """A vocab.json that is not JSON: the tokenizers library's bare Exception becomes an error naming the file."""
    tok_dir = SHARED / "tokenizers" / "gpt2"
    if not tok_dir.is_dir():
        pytest.skip("../shared/tokenizers/gpt2 not present")
    shutil.copytree(tok_dir, tmp_path / "tok")
    (tmp_path / "tok" / "vocab.json").write_text("{")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'tok' / 'vocab.json'}: not valid JSON"):
        load_tokenizer(tmp_path / "tok")


def _break(folder, tmp_path, edit):
    dst = tmp_path / "broken"
    shutil.copytree(folder, dst)
    edit(dst)
    return dst


def test_bad_checkpoints_get_clear_errors(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_pretrained(tmp_path / "nope")
    no_cfg = _break(checkpoints["gpt2"], tmp_path / "a", lambda d: (d / "config.json").unlink())
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(no_cfg)
    no_w = _break(checkpoints["gpt2"], tmp_path / "b", lambda d: (d / "model.safetensors").unlink())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(no_w)
    with pytest.raises(ValueError, match=r"unsupported model_type 'bert'.*gpt2, llama"):
        from_hf({"model_type": "bert"})

    def drop_and_add(d):
        from safetensors.numpy import load_file, save_file
        t = load_file(d / "model.safetensors")
        t.pop("transformer.h.1.mlp.c_fc.bias")
        t["transformer.h.9.extra.weight"] = np.zeros(3, np.float32)
        t["transformer.h.0.attn.bias"] = np.zeros(3, np.float32)  # a known buffer: ignored
        save_file(t, d / "model.safetensors")

    keys = _break(checkpoints["gpt2"], tmp_path / "c", drop_and_add)
    with pytest.raises(ValueError, match=r"missing \['transformer.h.1.mlp.c_fc.bias'\]; unexpected \['transformer.h.9.extra.weight'\]"):
        load_pretrained(keys, tokenizer=False)

    model, _ = load_pretrained(checkpoints["gpt2"], tokenizer=False)
    with pytest.raises(ValueError, match="49 tokens exceeds the model's 48 positions"):
        model(np.zeros((1, 49), int))


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        cfg.pop(k)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_broken_weight_files_and_configs_are_named_before_any_tensor_is_read(checkpoints, tmp_path, monkeypatch):
    weights = checkpoints["gpt2"] / "model.safetensors"
    size = weights.stat().st_size
    truncated = _break(checkpoints["gpt2"], tmp_path / "t", lambda d: (d / "model.safetensors").write_bytes(
        weights.read_bytes()[: size // 2]))
    noise = _break(checkpoints["gpt2"], tmp_path / "r", lambda d: (d / "model.safetensors").write_bytes(
        np.random.default_rng(0).bytes(5000)))
    bad_json = _break(checkpoints["gpt2"], tmp_path / "j", lambda d: (d / "config.json").write_text("{n_layer: 3"))
    twelve = _break(checkpoints["gpt2"], tmp_path / "w", lambda d: _edit_config(d, n_layer="twelve"))
    no_hidden = _break(checkpoints["llama_gqa"], tmp_path / "h", lambda d: _edit_config(d, hidden_size=None))
    cases = {truncated: rf"{truncated / 'model.safetensors'}: truncated: its header needs {size} bytes .* has {size // 2}",
             noise: rf"{noise / 'model.safetensors'}: not a safetensors file, or truncated: its header would take \d+ "
                    "bytes, the file has 4992",
             bad_json: rf"{bad_json / 'config.json'}: not valid JSON",
             twelve: rf"{twelve / 'config.json'}: field 'n_layer' must be a positive integer; got 'twelve'",
             no_hidden: rf"{no_hidden / 'config.json'}: missing field 'hidden_size'"}
    monkeypatch.setattr(SafetensorsReader, "__call__", lambda *a: pytest.fail("a tensor was read"))
    for folder, message in cases.items():
        with pytest.raises(ValueError, match=message):
            check_weights(folder)
        with pytest.raises(ValueError, match=message):
            load_pretrained(folder, tokenizer=False)


def test_weight_headers_are_checked_against_the_config(checkpoints, tmp_path, monkeypatch):
    from safetensors.numpy import load_file, save_file

    monkeypatch.setattr(SafetensorsReader, "__call__", lambda *a: pytest.fail("a tensor was read"))
    assert check_weights(checkpoints["llama_sharded"]) == from_hf(
        json.loads((checkpoints["llama_sharded"] / "config.json").read_text()))
    monkeypatch.undo()

    def edit(name, value):
        def apply(d):
            t = load_file(d / "model.safetensors")
            t[name] = value(t[name])
            save_file(t, d / "model.safetensors")
        return apply

    q = "model.layers.1.self_attn.q_proj.weight"
    wide = _break(checkpoints["llama_gqa"], tmp_path / "s", edit(q, lambda a: np.zeros((32, 40), a.dtype)))
    with pytest.raises(ValueError, match=rf"model.safetensors: tensor {q} of shape \(32, 40\) where the config "
                                         r"needs \(32, 32\)"):
        check_weights(wide)
    ints = _break(checkpoints["llama_gqa"], tmp_path / "i", edit(q, lambda a: a.astype(np.int8)))
    with pytest.raises(ValueError, match=rf"tensor {q} has dtype I8; weights must be one of F64, F32, F16, BF16"):
        check_weights(ints)
    more = _break(checkpoints["llama_gqa"], tmp_path / "m", lambda d: _edit_config(d, num_hidden_layers=4))
    with pytest.raises(ValueError, match=r"missing \['model.layers.3.input_layernorm.weight'"):
        check_weights(more)


@pytest.mark.parametrize("kind,name,value", [("llama_sharded", "model.layers.1.mlp.up_proj.weight", np.nan),
                                             ("gpt2", "transformer.h.1.mlp.c_fc.weight", -np.inf)])
def test_a_tensor_with_non_finite_values_is_refused_naming_it_and_its_file(checkpoints, tmp_path, kind, name, value):
    """One NaN (or Inf) in one block's weight would make that block's hidden states and every
    later one NaN, and their scores with them: loading names the tensor and its file (the
    shard holding it)."""
    from safetensors.numpy import load_file, save_file

    folder = _break(checkpoints[kind], tmp_path, lambda d: None)
    file = next(f for f in sorted(folder.glob("*.safetensors")) if name in load_file(f))
    tensors = load_file(file)
    bad = tensors[name].copy()
    bad[3, 5] = value
    save_file({**tensors, name: bad}, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"^{file}: tensor {name} holds 1 non-finite value\(s\) \(NaN or Inf\) of "
                                         rf"{bad.size}: a diverged or damaged model"):
        load_pretrained(folder, tokenizer=False)


def test_a_missing_relative_path_is_a_local_error_not_a_hub_lookup(monkeypatch, tmp_path):
    from assocjax.models import loading

    monkeypatch.setattr(loading, "_download", lambda name: pytest.fail(f"looked up {name!r} on the hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"model folder not found: {tmp_path / 'nosuchdir' / 'model'}; hub "
                                                "names are downloaded only when allowed explicitly"):
        load_pretrained("nosuchdir/model")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve("./nosuchdir/model", hub=True)  # a path, not a hub name
    monkeypatch.setattr(loading, "_download", lambda name: tmp_path / name.replace("/", "--"))
    assert resolve("org/model", hub=True) == tmp_path / "org--model"


def test_blocked_causal_attention_equals_full():
    from assocjax.models.common import attention, causal_attention
    from assocjax.models.modeling import positions_and_mask

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((2, 37, 4, 8)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 37, 2, 8)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((2, 37, 2, 8)), jnp.float32)
    mask = np.ones((2, 37), int)
    mask[1, :5] = 0  # left padding
    _, allowed = positions_and_mask(jnp.zeros((2, 37), int), jnp.asarray(mask))
    full = attention(q, k, v, allowed)
    blocked = causal_attention(q, k, v, allowed, block=8)
    np.testing.assert_allclose(np.asarray(blocked)[:, 5:], np.asarray(full)[:, 5:], atol=1e-6)
    np.testing.assert_allclose(np.asarray(blocked)[0], np.asarray(full)[0], atol=1e-6)


LOAD_PEAK = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jnp.ones(3).block_until_ready()  # the runtime's own memory is not the loader's
from assocjax.models import load_pretrained
from assocjax.models.loading import SafetensorsReader, weight_files

def hwm_kib():  # this process's peak resident memory (VmHWM starts afresh at exec, unlike ru_maxrss)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])

before = hwm_kib()
model, _ = load_pretrained(sys.argv[1], dtype=jnp.bfloat16, tokenizer=False)
peak_kib = hwm_kib() - before
p = model.param_tree()
reader = SafetensorsReader(weight_files(__import__("pathlib").Path(sys.argv[1])))
ref = {"q": reader("model.layers.2.self_attn.q_proj.weight").T, "embed": reader("model.embed_tokens.weight")}
ours = {"q": np.asarray(p["layers"]["q_w"][2]), "embed": np.asarray(p["embed"])}
exact = all(np.array_equal(ref[k].astype(ours[k].dtype).view(np.uint16), ours[k].view(np.uint16)) for k in ref)
print(json.dumps(dict(peak_kib=peak_kib, dtypes=sorted({str(a.dtype) for a in jax.tree.leaves(p)}), exact=exact)))
"""


@pytest.mark.parametrize("ckpt_dtype", ["bfloat16", "float32"])
def test_bfloat16_loading_holds_one_model_in_memory(tmp_path, ckpt_dtype):
    """dtype=bfloat16 builds every leaf in bfloat16 from the file (no float32 leaf, no host
    stack beside the device copy): the process's peak grows by about the bfloat16 model plus
    one checkpoint tensor. The old loader (host stack + device copy + memory-mapped pages)
    needed about twice the model (bfloat16 file) or three times (float32 file)."""
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc/self/status (Linux) to read the peak memory")
    total, largest = save_random_llama(tmp_path, hidden=1024, layers=4, heads=16, kv_heads=16, intermediate=2816,
                                       vocab=16000, dtype=ckpt_dtype)
    model_bf16 = total // (2 if ckpt_dtype == "float32" else 1)
    out = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dtypes"] == ["bfloat16"] and got["exact"]
    fixed = 64 * 2**20  # the loader's compiled update programs and allocator slack, independent of model size
    assert model_bf16 <= got["peak_kib"] * 1024 < model_bf16 + largest + fixed, (got, model_bf16, largest)


def test_bfloat16_forward_does_not_convert_all_layers_at_once():
    """XLA:CPU computes bfloat16 products in float32; the layer loop of feature extraction and
    generation must convert one layer's weights per iteration, not hoist a float32 copy of
    every layer out of the loop."""
    from flax import nnx

    from assocjax.models import CausalLM
    from assocjax.models.generation import _generate_tokens_top
    from assocjax.models.modeling import forward_hidden_top

    temps = {}
    for n in (2, 10):
        cfg = from_hf(dict(model_type="llama", hidden_size=256, num_hidden_layers=n, num_attention_heads=4,
                           intermediate_size=1024, vocab_size=64, max_position_embeddings=64))
        abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
        params = nnx.to_pure_dict(nnx.state(abstract.params, nnx.Param))
        ids = jax.ShapeDtypeStruct((1, 32), jnp.int32)
        temps["hidden", n] = forward_hidden_top.lower(cfg, params, ids).compile().memory_analysis().temp_size_in_bytes
        gen = _generate_tokens_top.lower(cfg, params, ids, ids, jax.random.key(0), max_new_tokens=4, greedy=True)
        temps["generate", n] = gen.compile().memory_analysis().temp_size_in_bytes
    layer_f32 = 4 * (4 * 256 * 256 + 3 * 256 * 1024)  # one layer's weights in float32
    for name in ("hidden", "generate"):
        assert temps[name, 10] - temps[name, 2] < layer_f32, (name, temps, layer_f32)
