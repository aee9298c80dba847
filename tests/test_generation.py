import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from assocjax.models import load_pretrained
from assocjax.models.generation import generate, generate_tokens, sample_logits

jax.config.update("jax_default_matmul_precision", "highest")

P, N = 9, 20
RNG = np.random.default_rng(0)
IDS = RNG.integers(1, 100, (3, P))
MASK = np.ones((3, P), int)
MASK[1, :3] = 0
MASK[2, :6] = 0
IDS[MASK == 0] = 0


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """name -> (our model, transformers model) of the same random checkpoint."""
    # initializer_range 0.2 (not 0.02) so greedy decoding does not just repeat one token.
    configs = {
        "gpt2": GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.2),
        "llama_gqa": LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=100, initializer_range=0.2),
    }
    out = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(cfg).eval()
        hf.generation_config.eos_token_id = None  # HF must not stop early: we compare all 20 tokens
        folder = tmp_path_factory.mktemp(name)
        hf.save_pretrained(folder)
        out[name] = (load_pretrained(folder, tokenizer=False)[0], hf)
    return out


def hf_greedy(hf, ids, mask):
    with torch.no_grad():
        out = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                          max_new_tokens=N, min_new_tokens=None, min_length=0, pad_token_id=0)
    return out.numpy()[:, ids.shape[1]:]


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_greedy_matches_transformers(tiny, name):
    model, hf = tiny[name]
    for ids, mask in [(IDS[:1], MASK[:1]), (IDS, MASK)]:
        ref = hf_greedy(hf, ids, mask)
        out = generate(model, ids, mask, max_new_tokens=N)
        assert out.tokens.shape == ref.shape == (len(ids), N)
        np.testing.assert_array_equal(out.tokens, ref)
        assert (out.lengths == N).all() and not out.stopped.any()
    assert min(len(set(row)) for row in out.tokens) > 3  # a non-trivial continuation


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_cached_decoding_logits_equal_full_forward(tiny, name):
    model, _ = tiny[name]
    out = generate(model, IDS, MASK, max_new_tokens=N, temperature=1.0, seed=3, return_scores=True)
    full = np.asarray(model(np.concatenate([IDS, out.tokens], 1), np.concatenate([MASK, np.ones((3, N), int)], 1)))
    # The logits that picked new token t are the full forward's at the slot before it.
    np.testing.assert_allclose(out.scores, full[:, P - 1:P - 1 + N], atol=1e-4, rtol=1e-4)


def test_stop_tokens_pad_finished_rows_only(tiny):
    model, _ = tiny["gpt2"]
    free = generate(model, IDS, MASK, max_new_tokens=N).tokens
    # A token row 0 first emits at step j >= 2 and the other rows never emit.
    j = next(j for j in range(2, N) if free[0, j] not in free[0, :j] and free[0, j] not in free[1:])
    stop = int(free[0, j])
    out = generate(model, IDS, MASK, max_new_tokens=N, stop_tokens=(stop, 998, 999), pad_token_id=-1)
    np.testing.assert_array_equal(out.tokens[0, :j + 1], free[0, :j + 1])
    assert (out.tokens[0, j + 1:] == -1).all()
    np.testing.assert_array_equal(out.tokens[1:], free[1:])
    np.testing.assert_array_equal(out.lengths, [j + 1, N, N])
    np.testing.assert_array_equal(out.stopped, [True, False, False])
    np.testing.assert_array_equal(out.mask().sum(1), out.lengths)
    # Every row stopping at its first token ends the loop with all-pad tails.
    both = generate(model, IDS, MASK, max_new_tokens=N, stop_tokens=free[:, 0])
    np.testing.assert_array_equal(both.tokens[:, 0], free[:, 0])
    assert (both.tokens[:, 1:] == 0).all() and (both.lengths == 1).all() and both.stopped.all()


def test_sampling_is_seeded(tiny):
    model, _ = tiny["llama_gqa"]
    a = generate(model, IDS, MASK, temperature=1.0, seed=1).tokens
    np.testing.assert_array_equal(a, generate(model, IDS, MASK, temperature=1.0, seed=1).tokens)
    assert (a != generate(model, IDS, MASK, temperature=1.0, seed=2).tokens).any()
    greedy = generate(model, IDS, MASK).tokens
    assert (a != greedy).any()
    np.testing.assert_array_equal(generate(model, IDS, MASK, temperature=1.0, top_p=1e-6, seed=1).tokens, greedy)


@pytest.mark.parametrize("temperature, top_p", [(0.7, 0.8), (1.5, 1.0), (1.0, 0.5)])
def test_sample_logits_frequencies_match_transformers_warpers(temperature, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 1.5], np.float32)
    scores = TemperatureLogitsWarper(temperature)(None, torch.tensor(logits)[None])
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    expected = torch.softmax(scores, -1)[0].numpy()
    n = 40_000
    draws = np.asarray(sample_logits(jnp.tile(logits, (n, 1)), jax.random.key(0), temperature, top_p))
    freq = np.bincount(draws, minlength=len(logits)) / n
    np.testing.assert_allclose(freq, expected, atol=0.01)  # ~4 standard errors
    assert (freq[expected == 0] == 0).all()


def test_pure_core_takes_traced_sampling_settings(tiny):
    model, _ = tiny["llama_gqa"]
    args = (model.cfg, model.param_tree(), jnp.asarray(IDS, jnp.int32), jnp.asarray(MASK, bool), jax.random.key(0))
    a = generate_tokens(*args, jnp.float32(1.0), jnp.float32(1e-6), max_new_tokens=N, greedy=False)[0]
    b = generate_tokens(*args, jnp.float32(0.5), jnp.float32(1e-6), max_new_tokens=N, greedy=False)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, generate(model, IDS, MASK, max_new_tokens=N).tokens)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=IDS[0]), "batch, seq"),
    (dict(input_ids=IDS.astype(float)), "integer"),
    (dict(attention_mask=MASK[:, 1:]), "shape"),
    (dict(attention_mask=MASK[:, ::-1]), "LEFT-padded"),
    (dict(max_new_tokens=0), "positive"),
    (dict(max_new_tokens=56), r"9 tokens \+ max_new_tokens=56 = 65 exceeds the model's 64"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_inputs(tiny, kwargs, match):
    model, _ = tiny["gpt2"]
    kw = dict(input_ids=IDS, attention_mask=MASK) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(model, kw.pop("input_ids"), kw.pop("attention_mask"), **kw)
