"""Instruction tuning on a tiny LLaMA: loss, LoRA / frozen updates, accumulation,
Orbax kill-and-resume, identity checks, Hugging Face export.

Compiled steps are shared: the LoRA runs use one StepSpec and (1, 4, 48) batches; only the
resume runs (LoRA dropout on), the accumulation check ((2, 2, 48)) and frozen tuning compile
their own step."""
import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from assocjax.models import forward_logits, load_pretrained
from assocjax.tune import dataset, prompts
from assocjax.tune.lora import LoraConfig, init_adapters
from assocjax.tune.train import (StepSpec, TrainConfig, _step_batch, eval_sums, optimizer, save_hf_model, train,
                                 train_step, tuned_params)
from conftest import save_tiny
from test_tune_dataset import make_stories, tokenizer_for

MAX_LEN = 48
TARGETS = ("v", "down")  # two targets keep compiles short; both write into the residual stream
BASE = TrainConfig(method="lora", lora=LoraConfig(rank=8, alpha=16.0, dropout=0.0, targets=TARGETS), lr=1e-2,
                   warmup_steps=0, total_steps=25, batch_size=4, max_len=MAX_LEN, padding="max_len", eval_every=0,
                   eval_batch_size=3, save_every=0, progress=False)


def _model(folder, tok, **overrides):
    # initializer_range 0.2: logits spread enough that LoRA alone can fit the outputs.
    kw = dict(vocab_size=len(tok), max_position_embeddings=64, num_hidden_layers=2, initializer_range=0.2,
              bos_token_id=1, eos_token_id=2)
    save_tiny("llama", folder, **{**kw, **overrides})
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    stories, augs = make_stories(n_stories=3, n_words=60)
    recs = dataset.build_records(stories, augs, n=18, seed=0, passage_words=(4, 8))
    tok = tokenizer_for(recs)
    train_recs = [r for r in recs if r["story"] != "s2"]
    val_recs = [r for r in recs if r["story"] == "s2"]
    return dict(root=root, tok=tok, train=train_recs, val=val_recs, model=_model(root / "model", tok))


def _leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def lora_run(setup):
    cfg = dataclasses.replace(BASE, eval_every=25)
    return train(cfg, setup["model"], setup["train"][:4], setup["val"])


@pytest.mark.slow
def test_lora_loss_falls_and_base_weights_stay_bitwise(setup, lora_run):
    losses = [h["loss"] for h in lora_run.history]
    assert len(losses) == 25 and losses[-1] < 0.5 * losses[0], losses
    assert [h["val_loss"] is not None for h in lora_run.history] == [False] * 24 + [True]
    assert np.isfinite(lora_run.history[-1]["val_loss"])
    base = _leaves(load_pretrained(setup["model"], tokenizer=False)[0].param_tree())
    kept = _leaves(lora_run.base)
    assert kept.keys() == base.keys() and all(np.array_equal(kept[k], base[k]) for k in base)
    tuned = _leaves(tuned_params(lora_run))
    targets = {f"['layers']['{t}_w']" for t in TARGETS}
    for k in base:  # merged: only the target matrices moved
        assert np.array_equal(tuned[k], base[k]) != (k in targets), k
    out = save_hf_model(setup["root"] / "tuned", lora_run.model_cfg, tuned_params(lora_run), setup["model"])
    model, tok = load_pretrained(out)
    assert tok.get_vocab() == setup["tok"].get_vocab()
    again = _leaves(model.param_tree())
    assert all(np.array_equal(again[k], tuned[k]) for k in tuned)


def test_frozen_tuning_changes_only_the_chosen_blocks(setup):
    cfg = dataclasses.replace(BASE, method="frozen", layers="last:1", total_steps=3)
    result = train(cfg, setup["model"], setup["train"][:4])
    assert result.layers == (1,)
    base = _leaves(load_pretrained(setup["model"], tokenizer=False)[0].param_tree())
    tuned = _leaves(tuned_params(result))
    assert tuned.keys() == base.keys()
    for k in base:
        if k.startswith("['layers']"):
            assert np.array_equal(tuned[k][0], base[k][0]), k  # frozen block 0: bitwise
            assert not np.allclose(tuned[k][1], base[k][1], rtol=0, atol=1e-6), k  # trained block 1 moved
        else:
            assert np.array_equal(tuned[k], base[k]), k  # embeddings, final norm, head


def _spec(model_cfg, cfg: TrainConfig) -> StepSpec:
    return StepSpec(model_cfg, cfg.method, cfg.lora if cfg.method == "lora" else None, cfg.dtype, cfg.clip_norm,
                    cfg.weight_decay, (cfg.adam_b1, cfg.adam_b2, cfg.adam_eps))


def _committed(tree):  # as train() passes them, so the compiled step is shared
    return jax.tree.map(lambda x: jax.device_put(jnp.array(x), x.sharding), tree)


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch(setup):
    """k=2 micro-batches of 2 rows == 1 batch of 4 rows: loss and gradient (read from
    Adam's first moment, (1 - b1) * g) are means over all target tokens of the step; the
    records have different output lengths, so a mean of per-micro-batch means would differ."""
    enc = prompts.encode_all(setup["train"][:4], setup["tok"], "plain", MAX_LEN)
    counts = [int(m.sum()) for m in enc.loss_mask]
    assert sum(counts[:2]) != sum(counts[2:])
    model, _ = load_pretrained(setup["model"], tokenizer=False)
    spec = _spec(model.cfg, BASE)
    adapters = init_adapters(model.cfg, BASE.lora, jax.random.key(0))
    adapters = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), adapters)  # B != 0
    opt_state = optimizer(spec).init(adapters)
    out = {}
    for k, b in ((1, 4), (2, 2)):
        batch = _step_batch([[0], [1], [2], [3]], enc, k, b, 2, MAX_LEN, True)
        assert batch.ids.shape == (k, b, MAX_LEN)
        _, state, loss, n = train_step(spec, _committed(adapters), _committed(opt_state), model.param_tree(),
                                       jax.tree.map(jnp.asarray, batch), jnp.asarray(0, jnp.int32), jnp.float32(0.0),
                                       jax.random.key(0))
        adam = next(part for part in state if hasattr(part, "mu"))
        out[k] = (_leaves(adam.mu), float(loss), float(n))
    (m1, l1, n1), (m2, l2, n2) = out[1], out[2]
    assert n1 == n2 == sum(counts)
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    scale = max(np.abs(a).max() for a in m1.values())
    assert scale > 1e-4
    for key, a in m1.items():  # float32 sums in another order: errors ~1e-6 of the largest terms
        np.testing.assert_allclose(m2[key], a, rtol=1e-5, atol=1e-5 * scale)


def test_loss_and_packing_match_a_float64_reference(setup):
    """Token loss over output+eos (targets shifted by one) of padded and of packed rows
    equals a float64 NumPy loss from the library's standard forward on each record alone:
    packed records see neither each other nor a shifted position. (Fresh adapters have
    B = 0, so the LoRA model is the base model.)"""
    tok = setup["tok"]
    model, _ = load_pretrained(setup["model"], tokenizer=False)
    params = model.param_tree()
    short = [{**r, "instruction": "Say."} for r in setup["train"][:3]]  # two fit in one row
    enc = prompts.encode_all(short, tok, "plain", MAX_LEN)
    padded = prompts.make_batch([[0], [1], [2]], enc, 2, MAX_LEN, fixed=True)
    logits = np.asarray(forward_logits(model.cfg, params, jnp.asarray(padded.ids), jnp.asarray(padded.attention)),
                        np.float64)
    total = count = 0.0
    for r in range(3):
        z = logits[r] - logits[r].max(-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        ids, mask = enc.ids[r], enc.loss_mask[r]
        targets = np.nonzero(mask)[0]
        total -= lp[targets - 1, ids[targets]].sum()
        count += len(targets)
    packed = prompts.make_batch([[0, 1], [2], []], enc, 2, MAX_LEN, fixed=True)
    assert packed.segment[0].max() == 2
    adapters = init_adapters(model.cfg, BASE.lora, jax.random.key(0))
    for batch in (padded, packed):  # (3, MAX_LEN), as the validation batches of lora_run
        s, n = eval_sums(_spec(model.cfg, BASE), adapters, params, jax.tree.map(jnp.asarray, batch))
        assert float(n) == count
        np.testing.assert_allclose(float(s) / float(n), total / count, rtol=1e-5)
    # bfloat16 compute (weights cast as train() casts them): bf16-level agreement, not float32's.
    bf16 = _spec(model.cfg, dataclasses.replace(BASE, dtype="bfloat16"))
    s, n = eval_sums(bf16, adapters, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params),
                     jax.tree.map(jnp.asarray, padded))
    assert float(s) / float(n) != pytest.approx(total / count, rel=1e-5)
    np.testing.assert_allclose(float(s) / float(n), total / count, rtol=2e-2)


# -- checkpoints ---------------------------------------------------------------------------------
# LoRA dropout on: its keys, like the data order, must follow the step across a resume.
RESUME = dataclasses.replace(BASE, lora=dataclasses.replace(BASE.lora, dropout=0.1), total_steps=6, save_every=2,
                             keep=2, lr=5e-3, warmup_steps=2)


@pytest.fixture(scope="module")
def killed(setup):
    """A run 'killed' after step 4: checkpoints at steps 2 and 4 in its folder."""
    folder = setup["root"] / "ckpt"
    partial = train(dataclasses.replace(RESUME, checkpoint_dir=folder), setup["model"], setup["train"],
                    stop_after=4)
    assert [h["step"] for h in partial.history] == [1, 2, 3, 4]
    return folder


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(setup, killed):
    full = train(RESUME, setup["model"], setup["train"])  # same run, no checkpoints, never stopped
    folder = setup["root"] / "ckpt_resume"
    shutil.copytree(killed, folder)
    resumed = train(dataclasses.replace(RESUME, checkpoint_dir=folder), setup["model"], setup["train"])
    assert resumed.resumed_from == 4
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in full.history],
                               rtol=1e-6, atol=0)
    assert len({round(h["loss"], 6) for h in full.history}) == 6  # the data order and dropout really vary
    a, b = _leaves(resumed.trainable), _leaves(full.trainable)
    assert all(np.allclose(a[k], b[k], rtol=1e-6, atol=1e-9) for k in a)
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["4", "6"]  # keep=2


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(setup, killed, tmp_path):
    tok = setup["tok"]
    other = _model(tmp_path / "wide", tok, hidden_size=48, intermediate_size=64)
    folder = tmp_path / "ckpt"
    shutil.copytree(killed, folder)
    cfg = dataclasses.replace(RESUME, checkpoint_dir=folder)
    with pytest.raises(ValueError, match=r"was made for hidden=32, head_dim=8, intermediate=56; "
                                         r"this run has hidden=48, head_dim=12, intermediate=64"):
        train(cfg, other, setup["train"])
    reinit = tmp_path / "reinit"  # same config, other weights
    shutil.copytree(setup["model"], reinit)
    weights = load_file(reinit / "model.safetensors")
    save_file({**weights, "model.embed_tokens.weight": 1.5 * weights["model.embed_tokens.weight"]},
              reinit / "model.safetensors")
    with pytest.raises(ValueError, match="base weights \\(fingerprint\\)"):
        train(cfg, reinit, setup["train"])
    with pytest.raises(ValueError, match="lora: checkpoint .*'rank': 8.*this run .*'rank': 4"):
        train(dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=4)), setup["model"], setup["train"])
    with pytest.raises(ValueError, match="method: checkpoint 'lora', this run 'frozen'"):
        train(dataclasses.replace(cfg, method="frozen"), setup["model"], setup["train"])
    with pytest.raises(ValueError, match="data: checkpoint"):
        train(cfg, setup["model"], setup["train"][:-1])


def test_bad_configs(setup):
    bad = dataclasses.replace(BASE, lora=LoraConfig(targets=("qkv", "q")))
    with pytest.raises(ValueError, match="match no module.*q, k, v, o, gate, up, down"):
        train(bad, setup["model"], setup["train"])
    with pytest.raises(ValueError, match="max_len=100 exceeds the model's 64 positions"):
        train(dataclasses.replace(BASE, max_len=100), setup["model"], setup["train"])
    with pytest.raises(ValueError, match="method 'adapter'"):
        train(dataclasses.replace(BASE, method="adapter"), setup["model"], setup["train"])


# -- the scripts --------------------------------------------------------------------------------
def _script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_association_then_finetune_scripts(setup, tmp_path, capsys):
    """align.csv + augmentation files -> JSONL -> tuned model folder the loader reads."""
    from assocjax.augment.format import save as save_aug

    stories, augs = make_stories(n_stories=3, n_words=60)
    for s, words in stories.items():
        rows = [f"{w},{w.lower()},{0.3 * i:.2f},{0.3 * i + 0.2:.2f}" for i, w in enumerate(words)]
        (tmp_path / "gentle" / s).mkdir(parents=True)
        (tmp_path / "gentle" / s / "align.csv").write_text("\n".join(rows) + "\n")
        save_aug(augs[s][0], tmp_path / "augs" / f"{s}.json", words)
    make = _script("make_association")
    make.main(make.Args(stories=(tmp_path / "gentle",), augmentations=(tmp_path / "augs",), out=tmp_path / "data",
                        n=12, val_fraction=0.3, passage_words=(4, 8)))
    assert "12 association records" in capsys.readouterr().out
    train_recs = dataset.read_jsonl(tmp_path / "data" / "train.jsonl")
    val_recs = dataset.read_jsonl(tmp_path / "data" / "val.jsonl")
    assert len(train_recs) + len(val_recs) == 12
    assert not {r["story"] for r in train_recs} & {r["story"] for r in val_recs}
    tune = _script("finetune")
    cfg = dataclasses.replace(BASE, total_steps=2, eval_every=2)
    tune.main(tune.Args(model=setup["model"], train=tmp_path / "data" / "train.jsonl", out=tmp_path / "run",
                        val=tmp_path / "data" / "val.jsonl", tune=cfg))
    run = tmp_path / "run"
    written = {p.name for p in run.iterdir()}
    assert {"model", "adapters", "checkpoints", "history.csv", "history.json", "run.json"} <= written
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["steps"] == 2 and info["config"]["method"] == "lora"
    assert (run / "history.csv").read_text().splitlines()[0] == "step,loss,val_loss,lr,tokens"
    assert {p.name for p in (run / "adapters").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    model, _ = load_pretrained(run / "model")
    assert model.cfg == load_pretrained(setup["model"], tokenizer=False)[0].cfg
