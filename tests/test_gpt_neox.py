"""GPT-NeoX (the Pythia suite) as the third family, against transformers and PEFT on tiny
random checkpoints: logits and hidden states (parallel and sequential residual, rotary on a
quarter or all of each head), greedy generation, word features through the library's
extraction and score.py, LoRA (training steps, PEFT export and import)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig

from assocjax.models import forward_logits, from_hf, load_pretrained
from assocjax.models.generation import generate
from assocjax.tune import LoraConfig, init_adapters, load_peft, lora_inputs, merge, save_peft
from conftest import save_peft_adapter

VOCAB = 101
IDS = np.random.default_rng(0).integers(0, VOCAB, (2, 11))
MASK = np.ones_like(IDS)
MASK[1, :4] = 0  # left padding
TEXTS = ["The cat sat on the mat, and the dog ran in the park.", "It was a sunny day; they walked home together.",
         "A story is read aloud while people listen in the scanner.", "Memory links words to what came before."]
INSTRUCTION = "Continue the story."
PROMPT = f"### Instruction:\n{INSTRUCTION}\n\n### Input:\n\n\n### Response:\n"  # the fine-tuning format's text


def save_neox(folder, vocab_size=VOCAB, init=0.02, **overrides):
    """A tiny random GPT-NeoX checkpoint (transformers' own weights, names and config.json),
    with non-trivial norms and biases so that a mixed-up scale or bias would show."""
    torch.manual_seed(0)
    base = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=500,
                initializer_range=init, bos_token_id=0, eos_token_id=0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig(**{**base, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def save_neox_tokenizer(folder, texts, vocab_size=300):
    """Pythia's kind of tokenizer: byte-level BPE, <|endoftext|> as bos/eos, no token added
    before a text; trained offline on `texts`, saved as a GPTNeoXTokenizer (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPTNeoXTokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    backend.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = GPTNeoXTokenizer(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           unk_token="<|endoftext|>", pad_token="<|padding|>")
    tok.save_pretrained(str(folder))
    return folder


def hf_outputs(folder, ids, mask):
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)  # transformers' generate convention, as ours
    with torch.no_grad():
        out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions),
                 output_hidden_states=True)
    return np.stack([h.numpy() for h in out.hidden_states]), out.logits.numpy()


VARIANTS = {"parallel_quarter": dict(use_parallel_residual=True, rotary_pct=0.25),
            "parallel_full": dict(use_parallel_residual=True, rotary_pct=1.0),
            "sequential_quarter": dict(use_parallel_residual=False, rotary_pct=0.25),
            "sequential_full": dict(use_parallel_residual=False, rotary_pct=1.0, tie_word_embeddings=True)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("neox")
    return {name: save_neox(root / name, **kw) for name, kw in VARIANTS.items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_hidden_states_and_logits_match_transformers(folders, name):
    model, _ = load_pretrained(folders[name], tokenizer=False)
    cfg = model.cfg
    assert (cfg.arch, cfg.rotary_dim, cfg.parallel_residual) == (
        "gpt_neox", int(8 * VARIANTS[name]["rotary_pct"]), VARIANTS[name]["use_parallel_residual"])
    hs_ref, logits_ref = hf_outputs(folders[name], IDS, MASK)
    real = MASK.astype(bool)  # padded slots hold nothing either model promises
    hs = np.asarray(model.hidden_states(IDS, MASK))
    assert hs.shape == hs_ref.shape == (3, 2, 11, 32)
    np.testing.assert_allclose(hs[:, real], hs_ref[:, real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(model(IDS, MASK))[real], logits_ref[real], atol=1e-4, rtol=1e-4)


def test_pythia_config_fields(folders, tmp_path):
    """Pythia's own config.json (rotary_pct, rotary_emb_base, no rope_parameters) reads as
    transformers reads it; unsupported settings are refused naming the field."""
    pythia = dict(model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"], hidden_size=512, intermediate_size=2048,
                  num_attention_heads=8, num_hidden_layers=6, vocab_size=50304, max_position_embeddings=2048,
                  rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True, hidden_act="gelu",
                  layer_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)  # pythia-70m
    cfg = from_hf(pythia)
    ref = GPTNeoXConfig(**{k: v for k, v in pythia.items() if k not in ("model_type", "architectures")})
    assert cfg.rotary_dim == int(64 * ref.rope_parameters["partial_rotary_factor"]) == 16
    assert cfg.rope_theta == ref.rope_parameters["rope_theta"] == 10000
    assert (cfg.head_dim, cfg.n_kv_heads, cfg.tie_embeddings, cfg.parallel_residual) == (64, 8, False, True)
    saved = from_hf(json.loads((folders["sequential_quarter"] / "config.json").read_text()))  # rope_parameters
    assert (saved.rotary_dim, saved.rope_theta, saved.parallel_residual) == (2, 500.0, False)
    for change, match in [(dict(hidden_act="relu"), "hidden_act 'relu'"),
                          (dict(attention_bias=False), "attention_bias=false"),
                          (dict(rotary_pct=0.05), "rotary fraction 0.05 of the 64 channels of a head gives 3 rotated"),
                          (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope_type 'dynamic'"),
                          (dict(hidden_size=500), "hidden_size=500 is not a multiple of num_attention_heads=8")]:
        with pytest.raises(ValueError, match=match):
            from_hf({**pythia, **change}, "pythia/config.json")


def test_old_checkpoint_buffers_are_ignored(folders, tmp_path):
    """Pythia's hub checkpoints also hold the causal-mask and RoPE buffers of older
    transformers (attention.bias, attention.masked_bias, rotary_emb.inv_freq)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "old"
    shutil.copytree(folders["parallel_quarter"], folder)
    tensors = load_file(folder / "model.safetensors")
    for i in range(2):
        p = f"gpt_neox.layers.{i}.attention."
        tensors |= {p + "bias": np.tril(np.ones((1, 1, 64, 64), bool)), p + "masked_bias": np.array(-1e9, np.float32),
                    p + "rotary_emb.inv_freq": np.ones(1, np.float32)}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    old, _ = load_pretrained(folder, tokenizer=False)
    new, _ = load_pretrained(folders["parallel_quarter"], tokenizer=False)
    np.testing.assert_array_equal(np.asarray(old(IDS)), np.asarray(new(IDS)))


def test_greedy_generation_matches_transformers(tmp_path):
    # initializer_range 0.2 so that greedy decoding does not just repeat one token
    folder = save_neox(tmp_path / "gen", init=0.2)
    model, _ = load_pretrained(folder, tokenizer=False)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None  # HF must not stop early: all N tokens are compared
    ids = np.where(MASK == 1, IDS, 0)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(MASK), do_sample=False, max_new_tokens=16,
                          min_new_tokens=None, min_length=0, pad_token_id=0).numpy()[:, ids.shape[1]:]
    out = generate(model, ids, MASK, max_new_tokens=16)
    np.testing.assert_array_equal(out.tokens, ref)
    assert min(len(set(row)) for row in out.tokens) > 3  # a non-trivial continuation


@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neox_tok")
    save_neox_tokenizer(folder, TEXTS + [PROMPT])
    save_neox(folder, vocab_size=len(AutoTokenizer.from_pretrained(str(folder))), max_position_embeddings=128,
              init=0.2)  # logits spread enough for LoRA alone to fit the records
    return folder


def test_word_features_are_transformers_hidden_states_at_each_words_last_token(with_tokenizer):
    from assocjax.features import word_features, word_token_index

    model, tok = load_pretrained(with_tokenizer)
    words = TEXTS[0].split() + TEXTS[1].split()
    ids, word_of, prefix = word_token_index(tok, words)
    assert prefix == ()  # Pythia's tokenizer puts nothing before a text
    feats = word_features(model, tok, words, context=64, stride=32)
    hs_ref, _ = hf_outputs(with_tokenizer, ids[None], np.ones((1, len(ids)), int))
    last = [np.flatnonzero(word_of == w)[-1] for w in range(len(words))]
    assert feats.shape == (3, len(words), 32)
    np.testing.assert_allclose(feats, hs_ref[:, 0, last], atol=1e-4, rtol=1e-4)


LORA = LoraConfig(rank=4, alpha=6.0, targets=("qkv", "out", "fc", "proj"))


def _random_adapters(cfg, lora, seed=0):
    """Adapters with random nonzero B (fresh ones have B = 0 and would hide errors)."""
    ad = init_adapters(cfg, lora, jax.random.key(seed))
    rng = np.random.default_rng(seed + 1)
    return {"layers": {n: (jnp.asarray(0.3 * rng.normal(size=a.shape), jnp.float32) if n.endswith("_b") else a)
                       for n, a in ad["layers"].items()}}


def test_lora_default_targets_are_pefts(folders):
    model, _ = load_pretrained(folders["parallel_quarter"], tokenizer=False)
    assert LoraConfig().for_model(model.cfg).targets == ("qkv",)
    assert tuple(peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gpt_neox"]) == (
        "query_key_value",)


def test_peft_export_loads_in_peft_with_the_same_logits_and_gradients(folders, tmp_path):
    folder = folders["parallel_quarter"]
    model, _ = load_pretrained(folder, tokenizer=False)
    cfg, params = model.cfg, model.param_tree()
    ad = _random_adapters(cfg, LORA)
    ours = np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, LORA)))
    np.testing.assert_allclose(ours, np.asarray(forward_logits(cfg, merge(params, ad, LORA), IDS)), atol=1e-5)
    assert np.abs(ours - np.asarray(forward_logits(cfg, params, IDS))).max() > 1e-2  # the adapters do act

    out = save_peft(tmp_path / "adapter", cfg, ad, LORA, base_model_name_or_path=str(folder))
    conf = json.loads((out / "adapter_config.json").read_text())
    assert sorted(conf["target_modules"]) == ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"]
    assert conf["fan_in_fan_out"] is False
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    pm = peft.PeftModel.from_pretrained(base, out, is_trainable=True).eval()
    adapted = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lora_A")}
    modules = dict(zip(LORA.targets, ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                                      "mlp.dense_4h_to_h")))
    assert adapted == {f"gpt_neox.layers.{i}.{m}" for i in range(2) for m in modules.values()}
    ref = pm(torch.tensor(IDS)).logits
    np.testing.assert_allclose(ours, ref.detach().numpy(), atol=1e-4, rtol=1e-4)

    # gradients w.r.t. the adapters (what LoRA training follows): loss = sum(logits * WEIGHTS)
    weights = np.random.default_rng(1).normal(size=ours.shape).astype(np.float32)
    (ref * torch.tensor(weights)).sum().backward()
    grads = jax.grad(lambda a: jnp.sum(forward_logits(cfg, params, IDS, lora=lora_inputs(params, a, LORA)) * weights))(
        ad)["layers"]
    hf_modules = dict(pm.named_modules())
    for t, m in modules.items():
        for i in range(2):
            lora_module = hf_modules[f"base_model.model.gpt_neox.layers.{i}.{m}"]
            for end, w in (("a", lora_module.lora_A["default"].weight), ("b", lora_module.lora_B["default"].weight)):
                g, g_ref = np.asarray(grads[f"{t}_lora_{end}"][i]).T, w.grad.numpy()
                np.testing.assert_allclose(g, g_ref, atol=1e-4 * np.abs(g_ref).max(), rtol=1e-4, err_msg=f"{t} {end} {i}")
    back, lora_back = load_peft(out, cfg)
    assert lora_back == LORA
    for n, a in ad["layers"].items():
        np.testing.assert_array_equal(back["layers"][n], np.asarray(a))


def test_peft_made_adapter_loads(folders, tmp_path):
    """An adapter made and saved by PEFT itself, with PEFT's default gpt_neox target."""
    folder = folders["sequential_quarter"]
    model, _ = load_pretrained(folder, tokenizer=False)
    cfg, params = model.cfg, model.param_tree()
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    pm = save_peft_adapter(base, peft.LoraConfig(r=2, lora_alpha=5, task_type="CAUSAL_LM"), tmp_path / "peft")
    ad, lora = load_peft(tmp_path / "peft", cfg)
    assert lora == LoraConfig(rank=2, alpha=5.0, dropout=0.0, targets=("qkv",))
    with torch.no_grad():
        ref = pm.eval()(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward_logits(cfg, params, IDS, lora=lora_inputs(params, ad, lora))), ref,
                               atol=1e-4)


@pytest.mark.slow
def test_lora_training_lowers_the_loss_and_its_exports_load_in_peft_and_transformers(with_tokenizer, tmp_path):
    from assocjax.tune.config import DataOptions, MethodOptions, OptimOptions, ScheduleOptions, TrainConfig
    from assocjax.tune.train import train, write_outputs

    records = [dict(instruction=INSTRUCTION, input=a, output=b, story="s", id=str(i))
               for i, (a, b) in enumerate(zip(TEXTS, TEXTS[1:] + TEXTS[:1]))]
    cfg = TrainConfig(method=MethodOptions("lora", LORA), optim=OptimOptions(lr=3e-2),
                      schedule=ScheduleOptions(warmup_steps=0, total_steps=8),
                      data=DataOptions(batch_size=4, max_len=128, eval_every=0), save_every=0, progress=False)
    result = train(cfg, with_tokenizer, records)
    losses = [h["loss"] for h in result.history]  # every step sees all four records
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], losses
    paths = write_outputs(result, tmp_path / "run")
    base = AutoModelForCausalLM.from_pretrained(with_tokenizer, dtype=torch.float32)
    with torch.no_grad():
        via_peft = peft.PeftModel.from_pretrained(base, paths["adapters"]).eval()(torch.tensor(IDS)).logits.numpy()
        merged = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32).eval()
        via_merged = merged(torch.tensor(IDS)).logits.numpy()
    cfg = result.model_cfg
    ours = np.asarray(forward_logits(cfg, result.base, IDS, lora=lora_inputs(result.base, result.trainable, LORA)))
    np.testing.assert_allclose(ours, via_peft, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours, via_merged, atol=1e-4, rtol=1e-4)
    assert np.abs(ours - np.asarray(forward_logits(cfg, result.base, IDS))).max() > 1e-2  # it did train


@pytest.mark.slow
def test_score_py_scores_a_pythia_folder_on_the_built_in_world(with_tokenizer, tmp_path):
    """The whole pipeline (built-in world, features, ridge, scores) through the CLI, with a
    one-layer GPT-NeoX read from a folder."""
    import csv
    import shutil

    from scripts_loader import load_script

    from assocjax.cli import run_cli

    model = tmp_path / "model"
    shutil.copytree(with_tokenizer, model)
    save_neox(model, vocab_size=len(AutoTokenizer.from_pretrained(str(model))), num_hidden_layers=1)
    score = load_script("score", "score_neox_cli")
    small = ["--synthetic.n-stories", "2", "--synthetic.n-subjects", "3", "--synthetic.story-trs", "60",
             "--synthetic.space", "tinysphere", "--synthetic.n-vertices", "40", "--synthetic.n-layers", "1",
             "--synthetic.planted-layer", "1"]
    # 1.5-6 s (1-4 TRs): the default span's buffer of 14 TRs does not fit a 54-TR story in 4 chunks
    argv = small + ["--model.path", str(model), "--features.context", "64", "--features.stride", "32",
                    "--features.delay-span", "1.5", "6",
                    "--report.no-figures", "--report.no-maps", "--ceiling.n-splits", "10", "--report.n-boot", "50",
                    "--no-progress", "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(score.main, score.ScoreConfig, argv) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert {r["layer"] for r in rows} == {"0", "1"}
    assert all(np.isfinite(float(r["score"])) for r in rows if r["fit"] == "subjects")
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"] == str(model)
