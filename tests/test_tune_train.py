"""Instruction tuning on a tiny LLaMA: loss, LoRA / frozen updates, accumulation,
Orbax kill-and-resume, identity checks, Hugging Face export.

Compiled steps are shared: the LoRA runs use one StepSpec and (1, 4, 48) batches; only the
resume runs (LoRA dropout on), the accumulation check ((2, 2, 48)) and frozen tuning compile
their own step."""
import dataclasses
import re
import importlib
import json
import shutil
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scripts_loader import load_script
from safetensors.numpy import load_file, save_file

from assocjax.models import forward_hidden, forward_logits, load_pretrained
from assocjax.pipeline import FeatureOptions, ModelOptions, ScoreConfig
from assocjax.pipeline.config import CompareOptions
from assocjax.tune import dataset, prompts
from assocjax.tune.checkpoint import mismatches
from assocjax.tune.config import DataOptions, MethodOptions, OptimOptions, ScheduleOptions, TrainConfig
from assocjax.tune.methods import METHODS
from assocjax.tune.lora import LoraConfig, init_adapters
from assocjax.tune.train import (StepSpec, _step_batch, eval_sums, optimizer, save_hf_model, schedule, train,
                                 train_step, tuned_params, write_outputs)
from conftest import save_tiny
from test_tune_dataset import make_stories, tokenizer_for

compare_module = importlib.import_module("assocjax.pipeline.compare")  # the package's `compare` is the function

MAX_LEN = 48
TARGETS = ("v", "down")  # two targets keep compiles short; both write into the residual stream
BASE = TrainConfig(method=MethodOptions("lora", LoraConfig(rank=8, alpha=16.0, dropout=0.0, targets=TARGETS)),
                   optim=OptimOptions(lr=1e-2), schedule=ScheduleOptions(warmup_steps=0, total_steps=25),
                   data=DataOptions(batch_size=4, max_len=MAX_LEN, padding="max_len", eval_every=0, eval_batch_size=3),
                   save_every=0, progress=False)
# the option of each short name configure() takes: its group's field, or the method's name and options
PATHS = {**{f.name: f"{g}.{f.name}" for g in ("optim", "schedule", "data")
            for f in dataclasses.fields(getattr(TrainConfig(), g))},
         "method": "method.name", "lora": "method.lora", "layers": "method.frozen.layers"}


def configure(cfg: TrainConfig, **options) -> TrainConfig:
    """`cfg` with options replaced, each named by its field (lr=, total_steps=, method=, layers=)
    or its path (the run-level fields: checkpoint_dir=, save_every=, ...)."""
    for name, value in options.items():
        cfg = _replace(cfg, PATHS.get(name, name).split("."), value)
    return cfg


def _replace(obj, path, value):
    head, *rest = path
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value) if rest else value})


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
    cfg = configure(BASE, eval_every=25)
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
    cfg = configure(BASE, method="frozen", layers="last:1", total_steps=3)
    with pytest.warns(UserWarning, match="changes only hidden state 2: .* hidden states 0..1 are bit-identical"):
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


def _hidden(folder, params=None):
    """(L + 1, S, D) hidden states of one fixed row (the base model's, or `params` in its place)."""
    model, _ = load_pretrained(folder, tokenizer=False)
    ids = np.arange(3, 15)[None] % model.cfg.vocab_size
    return np.asarray(forward_hidden(model.cfg, model.param_tree() if params is None else params, ids))[:, 0]


@pytest.fixture(scope="module")
def deep(setup):
    """A 4-block model: last:2 and the default differ there (on 2 blocks last:2 is all)."""
    return _model(setup["root"] / "deep", setup["tok"], num_hidden_layers=4)


def test_frozen_default_trains_from_the_first_block(setup, deep):
    """Hidden state i is block i-1's output: the default must reach every hidden state above
    the embeddings, including the low and middle ones the paper scores."""
    cfg = configure(BASE, method="frozen", total_steps=2)
    assert cfg.method.frozen.layers == TrainConfig().method.frozen.layers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default leaves nothing above the embeddings unchanged: no warning
        result = train(cfg, deep, setup["train"][:4])
    assert result.layers == (0, 1, 2, 3)
    base, tuned = _hidden(deep), _hidden(deep, tuned_params(result))
    assert np.array_equal(tuned[0], base[0])  # the embeddings stay frozen
    for i in range(1, 5):
        assert np.abs(tuned[i] - base[i]).max() > 1e-4, i


def test_frozen_last_blocks_warn_naming_the_unchanged_layers(setup, deep, tmp_path, monkeypatch):
    """last:2 of 4 blocks leaves hidden states 0..2 bit-identical: finetune says so, and
    score.py --compare warns when every scored layer is one of them."""
    cfg = configure(BASE, method="frozen", layers="last:2", total_steps=2)
    with pytest.warns(UserWarning, match=r"changes only hidden states 3\.\.4: .* blocks 2-3 of 0\.\.3 trained, "
                                         r"hidden states 0\.\.2 are bit-identical"):
        result = train(cfg, deep, setup["train"][:4])
    base, tuned = _hidden(deep), _hidden(deep, tuned_params(result))
    for i in range(5):  # what the warning says is what happens
        assert np.array_equal(tuned[i], base[i]) == (i <= 2), i
    write_outputs(result, tmp_path / "run")
    model = str(tmp_path / "run" / "model")

    def score_cfg(layers):
        return ScoreConfig(output=tmp_path / "out", model=ModelOptions(path=str(deep)), features=FeatureOptions(layers=layers),
                           compare=CompareOptions(models=(model,), names=("frozen",), allow_overlap=True))

    class Scored(Exception):
        pass

    def score(_):
        raise Scored  # the warning comes before any scoring

    monkeypatch.setattr(compare_module, "score", score)
    with pytest.warns(UserWarning, match=r"--compare.models frozen \(.*run.json\): every scored layer \(1, 2\) lies at "
                                         r"or below block 2, the first trained block"), pytest.raises(Scored):
        compare_module.compare(score_cfg((1, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compare_module.warn_unchanged_layers("frozen", model, score_cfg((2, -1))) is None  # 4 can change
        assert compare_module.warn_unchanged_layers("base", str(deep), score_cfg((1,))) is None  # no run.json


# The losses of three steps of each method (warmup, weight decay, 2 micro-batches, LoRA dropout)
# as main's flat TrainConfig and string-branched methods gave them before issue 22 (252bd5d).
PINNED = {"lora": [4.961479663848877, 5.477538108825684, 5.009201526641846],
          "frozen": [4.961480140686035, 5.477537631988525, 4.919503688812256],
          "full": [4.961479663848877, 5.477538108825684, 5.001012325286865]}


def test_each_method_trains_as_before_the_table(setup):
    """The table and the grouped options changed no number: each method's losses are bitwise
    those of the code before them."""
    common = dict(total_steps=3, warmup_steps=1, weight_decay=0.1, accum=2, batch_size=2)
    runs = dict(lora=dict(lora=dataclasses.replace(BASE.method.lora, dropout=0.1)),
                frozen=dict(method="frozen", layers="last:1"), full=dict(method="full", lr=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frozen last:1 warns about the unchanged hidden states (tested above)
        got = {name: [h["loss"] for h in train(configure(BASE, **common, **over), setup["model"], setup["train"]).history]
               for name, over in runs.items()}
    assert got == PINNED


def test_the_methods_table_and_the_method_options_agree():
    """Adding a method is its METHODS entry and its options field: MethodOptions' name choices
    are the table's keys and every entry with options names a field of MethodOptions."""
    assert typing.get_args(typing.get_type_hints(MethodOptions)["name"]) == tuple(METHODS)
    fields = {f.name for f in dataclasses.fields(MethodOptions)} - {"name"}
    assert fields == {m.options for m in METHODS.values() if m.options is not None}
    assert all(name == m.name for name, m in METHODS.items())


def test_the_identity_holds_the_chosen_methods_options_and_no_reporting_option():
    """What checkpoints and cross-fit folds are keyed on: the LoRA options of a frozen run do
    not change its weights, nor does how often it reports or saves."""
    assert BASE.identity()["method"] == {"name": "lora", "lora": dataclasses.asdict(BASE.method.lora)}
    frozen = configure(BASE, method="frozen", layers="last:1")
    assert frozen.identity()["method"] == {"name": "frozen", "frozen": {"layers": "last:1"}}
    assert configure(frozen, lora=LoraConfig(rank=2)).identity() == frozen.identity()
    assert configure(BASE, method="full").identity()["method"] == {"name": "full"}
    quiet = configure(BASE, eval_every=7, eval_batch_size=1, save_every=3, keep=9, progress=True, checkpoint_dir="c")
    assert quiet.identity() == BASE.identity()
    assert configure(BASE, lr=0.5).identity()["optim"]["lr"] == 0.5 != BASE.identity()["optim"]["lr"]


def test_a_method_is_one_table_entry(setup, monkeypatch, tmp_path):
    """Training, its checkpoint identity and the outputs dispatch through METHODS: an entry
    added at run time (full tuning under another name) trains as the entry it copies and is
    recorded under its own name, with nothing else changed."""
    monkeypatch.setitem(METHODS, "every", dataclasses.replace(METHODS["full"], name="every"))
    runs = {name: train(configure(BASE, method=name, total_steps=2, checkpoint_dir=tmp_path / name), setup["model"],
                        setup["train"][:4]) for name in ("full", "every")}
    assert [h["loss"] for h in runs["every"].history] == [h["loss"] for h in runs["full"].history]
    run = json.loads(write_outputs(runs["every"], tmp_path / "run")["run"].read_text())
    assert run["config"]["method"]["name"] == "every" and not (tmp_path / "run" / "adapters").exists()
    with pytest.raises(ValueError, match="method.name: checkpoint 'full', this run 'every'"):
        train(configure(BASE, method="every", total_steps=2, checkpoint_dir=tmp_path / "full"), setup["model"],
              setup["train"][:4])


def test_a_checkpoint_of_the_flat_options_is_refused_as_such():
    """A checkpoint made before the options were grouped (format 1) is named as such, not
    reported as a list of every regrouped field."""
    old = dict(version=1, method="lora", lora=None, optimizer=dict(clip_norm=1.0), schedule=dict(lr=2e-4))
    now = dict(version=2, method=dict(name="lora"), optim=dict(clip_norm=1.0, lr=2e-4))
    assert mismatches(old, now) == ["checkpoint format 1, this assocjax's is 2 (format 1: the flat training options of "
                                    "assocjax before the grouped --method/--optim/--schedule/--data ones); it cannot "
                                    "be resumed by this version"]
    assert mismatches(now, {**now, "optim": dict(clip_norm=0.5, lr=2e-4)}) == [
        "optim.clip_norm: checkpoint 1.0, this run 0.5"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_default_targets_are_the_attention_query_and_value(setup, arch, tmp_path):
    """LoraConfig() works on every architecture; the adapted weights are the attention's
    query and value projections (GPT-2: its fused qkv), as PEFT's defaults."""
    folder = setup["model"]
    if arch == "gpt2":
        folder = tmp_path / "gpt2"
        save_tiny("gpt2", folder, vocab_size=len(setup["tok"]), n_positions=64, bos_token_id=1, eos_token_id=2)
        setup["tok"].save_pretrained(folder)
    cfg = configure(BASE, lora=LoraConfig(), total_steps=2)
    result = train(cfg, folder, setup["train"][:4])
    want = {"llama": ("q", "v"), "gpt2": ("qkv",)}[arch]
    assert result.config.method.lora.targets == want
    base = _leaves(load_pretrained(folder, tokenizer=False)[0].param_tree())
    tuned = _leaves(tuned_params(result))
    assert {k for k in base if not np.array_equal(tuned[k], base[k])} == {f"['layers']['{t}_w']" for t in want}
    write_outputs(result, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert tuple(info["config"]["method"]["lora"]["targets"]) == want
    modules = json.loads((tmp_path / "run" / "adapters" / "adapter_config.json").read_text())["target_modules"]
    assert modules == {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}[arch]


def _spec(model_cfg, cfg: TrainConfig) -> StepSpec:
    return StepSpec.of(cfg, model_cfg)


def _committed(tree):  # as train() passes them, so the compiled step is shared
    return jax.tree.map(lambda x: jax.device_put(jnp.array(x), x.sharding), tree)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_weight_decay_acts_on_matrices_and_embeddings_only(setup, method):
    """With zero gradients an AdamW update is the decay alone: weight_decay * w on every
    adapter (A and B), weight matrix and embedding; nothing on norm scales (or biases)."""
    model, _ = load_pretrained(setup["model"], tokenizer=False)
    spec = _spec(model.cfg, configure(BASE, method=method, weight_decay=0.1))
    tree = (init_adapters(model.cfg, BASE.method.lora, jax.random.key(0)) if method == "lora" else model.param_tree())
    tree = jax.tree.map(lambda a: a + 1.0, tree)  # B = 0 at init: no zero leaf may hide a missing decay
    opt = optimizer(spec)
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, tree), opt.init(tree), tree)
    decayed = {k: bool(np.allclose(u, 0.1 * _leaves(tree)[k], rtol=1e-6)) for k, u in _leaves(updates).items()}
    kept = {k: not u.any() for k, u in _leaves(updates).items()}
    expect = {k: method == "lora" or not k.endswith(("norm']", "_b']")) for k in decayed}
    assert decayed == expect and kept == {k: not v for k, v in expect.items()}, decayed


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
    adapters = init_adapters(model.cfg, BASE.method.lora, jax.random.key(0))
    adapters = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), adapters)  # B != 0
    opt_state = optimizer(spec).init(adapters)
    out = {}
    for k, b in ((1, 4), (2, 2)):
        batch = _step_batch([[0], [1], [2], [3]], enc, k, b, 2, MAX_LEN, True)
        assert batch.ids.shape == (k, b, MAX_LEN)
        _, state, loss, n, _ = train_step(spec, _committed(adapters), _committed(opt_state), model.param_tree(),
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
    adapters = init_adapters(model.cfg, BASE.method.lora, jax.random.key(0))
    for batch in (padded, packed):  # (3, MAX_LEN), as the validation batches of lora_run
        s, n = eval_sums(_spec(model.cfg, BASE), adapters, params, jax.tree.map(jnp.asarray, batch))
        assert float(n) == count
        np.testing.assert_allclose(float(s) / float(n), total / count, rtol=1e-5)
    # bfloat16 compute (weights cast as train() casts them): bf16-level agreement, not float32's.
    bf16 = _spec(model.cfg, configure(BASE, dtype="bfloat16"))
    s, n = eval_sums(bf16, adapters, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params),
                     jax.tree.map(jnp.asarray, padded))
    assert float(s) / float(n) != pytest.approx(total / count, rel=1e-5)
    np.testing.assert_allclose(float(s) / float(n), total / count, rtol=2e-2)


# -- checkpoints ---------------------------------------------------------------------------------
# LoRA dropout on: its keys, like the data order, must follow the step across a resume.
RESUME = configure(BASE, lora=dataclasses.replace(BASE.method.lora, dropout=0.1), total_steps=6, save_every=2,
                             keep=2, lr=5e-3, warmup_steps=2)


@pytest.fixture(scope="module")
def killed(setup):
    """A run 'killed' after step 4: checkpoints at steps 2 and 4 in its folder."""
    folder = setup["root"] / "ckpt"
    partial = train(configure(RESUME, checkpoint_dir=folder), setup["model"], setup["train"],
                    stop_after=4)
    assert [h["step"] for h in partial.history] == [1, 2, 3, 4]
    return folder


@pytest.fixture(scope="module")
def full(setup):
    """The same run as `killed`, without checkpoints, never stopped."""
    return train(RESUME, setup["model"], setup["train"])


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(setup, killed, full):
    folder = setup["root"] / "ckpt_resume"
    shutil.copytree(killed, folder)
    resumed = train(configure(RESUME, checkpoint_dir=folder), setup["model"], setup["train"])
    assert resumed.resumed_from == 4
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in full.history],
                               rtol=1e-6, atol=0)
    assert len({round(h["loss"], 6) for h in full.history}) == 6  # the data order and dropout really vary
    a, b = _leaves(resumed.trainable), _leaves(full.trainable)
    assert all(np.allclose(a[k], b[k], rtol=1e-6, atol=1e-9) for k in a)
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["4", "6"]  # keep=2


def _damage(step_folder):
    """Truncate a checkpoint step's array files (as a disk-full or interrupted copy would)."""
    files = [f for f in step_folder.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        with open(f, "r+b") as h:
            h.truncate(10)


def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(setup, killed, full, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(killed, folder)
    _damage(folder / "4")
    cfg = configure(RESUME, checkpoint_dir=folder)
    with pytest.warns(UserWarning, match=rf"checkpoint {folder / '4'} cannot be read .*moved it to 4.corrupt"):
        resumed = train(cfg, setup["model"], setup["train"])
    assert resumed.resumed_from == 2
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in full.history],
                               rtol=1e-6, atol=0)
    for step in (4, 6):  # steps 4 and 6 were saved again; nothing intact is left behind
        _damage(folder / str(step))
    with pytest.warns(UserWarning), pytest.raises(ValueError) as err:
        train(cfg, setup["model"], setup["train"])
    assert str(err.value).startswith(f"{folder}: no intact checkpoint") and "\n" not in str(err.value)


def test_resuming_a_longer_run_than_total_steps_is_refused(setup, killed, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(killed, folder)
    with pytest.raises(ValueError, match=r"trained for 4 steps, more than schedule.total_steps=3"):
        train(configure(RESUME, checkpoint_dir=folder, total_steps=3), setup["model"], setup["train"])


def test_checkpoint_of_another_model_is_refused(setup, killed, tmp_path):
    tok = setup["tok"]
    other = _model(tmp_path / "wide", tok, hidden_size=48, intermediate_size=64)
    folder = tmp_path / "ckpt"
    shutil.copytree(killed, folder)
    cfg = configure(RESUME, checkpoint_dir=folder)
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
    with pytest.raises(ValueError, match="method.lora.rank: checkpoint 8, this run 4"):
        train(configure(cfg, lora=dataclasses.replace(cfg.method.lora, rank=4)), setup["model"], setup["train"])
    with pytest.raises(ValueError, match="method.name: checkpoint 'lora', this run 'frozen'"):
        train(configure(cfg, method="frozen"), setup["model"], setup["train"])
    with pytest.raises(ValueError, match=r"records.hash: checkpoint .*records.n: checkpoint (\d+), this run (?!\1)\d+"):
        train(cfg, setup["model"], setup["train"][:-1])


def test_resume_with_changed_options_is_refused_naming_them(setup, killed, tmp_path):
    """A checkpoint resumes only under the options it was trained with: each changed one is
    named with its old and new value, before any step runs."""
    folder = tmp_path / "ckpt"
    shutil.copytree(killed, folder)
    cfg = configure(RESUME, checkpoint_dir=folder)
    o, sch = RESUME.optim, RESUME.schedule
    schedule_only = dict(lr=(o.lr, 0.01), total_steps=(sch.total_steps, 30))  # the run of the issue
    more = dict(schedule_only, clip_norm=(o.clip_norm, 0.5), weight_decay=(o.weight_decay, 0.1),
                warmup_steps=(sch.warmup_steps, 3), seed=(RESUME.data.seed, 1))
    for changed in (schedule_only, more):
        with pytest.raises(ValueError) as err:
            train(configure(cfg, **{k: new for k, (_, new) in changed.items()}), setup["model"],
                  setup["train"])
        msg = str(err.value)
        assert "\n" not in msg and "a new --out" in msg
        for name, (old, new) in changed.items():
            assert f"{PATHS[name]}: checkpoint {old!r}, this run {new!r}" in msg, (name, msg)
    # total_steps alone: the cosine of 8 steps gives step 4 another learning rate than the cosine of 6
    with pytest.raises(ValueError, match=r"was trained with schedule.total_steps=6, this run has "
                                         r"schedule.total_steps=8: its step 4 used lr .* Rerun with "
                                         r"--schedule.total-steps 6"):
        train(configure(cfg, total_steps=8), setup["model"], setup["train"])
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["2", "4"]  # nothing trained or saved


def test_a_constant_schedule_extends_and_run_json_records_it(setup, tmp_path):
    """Raising total_steps of a run whose learning rate is constant after warmup keeps the
    learning rates of the steps done: it resumes, with a warning, and run.json records the
    extension and the schedule every step followed."""
    flat = configure(RESUME, end_lr_fraction=1.0, total_steps=3, checkpoint_dir=tmp_path / "ckpt")
    train(flat, setup["model"], setup["train"])
    longer = configure(flat, total_steps=5)
    with pytest.warns(UserWarning, match="resuming a run of schedule.total_steps=3 as one of 5"):
        result = train(longer, setup["model"], setup["train"])
    assert result.resumed_from == 3 and result.extended_from == 3
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5]
    lr_at = schedule(longer)
    assert [h["lr"] for h in result.history] == [float(lr_at(s)) for s in range(5)]
    warmup = RESUME.schedule.warmup_steps
    assert [h["lr"] for h in result.history][warmup:] == [pytest.approx(RESUME.optim.lr, rel=1e-6)] * 3
    run = json.loads(write_outputs(result, tmp_path / "out")["run"].read_text())
    assert run["extended_from_total_steps"] == 3 and run["resumed_from"] == 3
    assert run["schedule"]["decay_end_step"] == 5 and run["schedule"]["end_lr"] == run["schedule"]["peak_lr"]


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_checkpoint(setup, tmp_path, monkeypatch):
    """A learning rate so large that step 1 drives the weights to overflow: step 2's loss is
    not finite. The run stops there, before saving; no model is written. (TrainConfig.check
    refuses such an lr up front; the bound is lifted here to reach the guard, which is for the
    divergence no option check foresees.)"""
    monkeypatch.setattr(importlib.import_module("assocjax.tune.config"), "MAX_LR", float("inf"))
    tune = _script("finetune")
    train_file = tmp_path / "train.jsonl"
    dataset.write_jsonl(setup["train"][:4], train_file)
    cfg = configure(BASE, lr=1e38, total_steps=3, save_every=1)
    args = tune.Args(model=setup["model"], train=train_file, out=tmp_path / "run", tune=cfg)
    with pytest.raises(ValueError, match=r"^step 2: the loss, .* became non-finite .*no model was written \(the "
                                         r"newest checkpoint, step 1 in .*, is kept\)"):
        tune.main(args)
    from assocjax.outputs import LOCK_FILE

    # no model files: only the checkpoints and the folder's lock file (it outlives the run by design)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != LOCK_FILE) == ["checkpoints"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]


NAN, INF = float("nan"), float("inf")
BAD_OPTIONS = [("lr", NAN), ("lr", -1.0), ("lr", 0.0), ("lr", INF), ("clip_norm", -1.0), ("clip_norm", NAN),
               ("weight_decay", -0.1), ("end_lr_fraction", 1.5), ("adam_b1", 1.0), ("adam_b2", -0.5),
               ("adam_eps", 0.0), ("warmup_steps", -1), ("seed", -1), ("keep", 0), ("total_steps", 0),
               # huge values: a first step that wrecks the weights, one that does nothing, a run without end
               ("lr", 1e30), ("adam_eps", 1e30), ("total_steps", 10**9), ("weight_decay", 1e30),
               ("weight_decay", 1 / BASE.optim.lr)]


@pytest.mark.parametrize("name,value", BAD_OPTIONS)
def test_bad_numeric_options_are_named_before_anything_is_loaded(name, value, tmp_path):
    cfg = configure(BASE, **{name: value})
    path = PATHS.get(name, name)  # the error names the option's path and flag: optim.lr=nan (--optim.lr)
    flag = "--" + path.replace("_", "-")
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{path}={value}')} \({flag}\) must be "):
        train(cfg, tmp_path / "no-model", [])  # no model folder, no records: the option is checked first


@pytest.mark.parametrize("name", ["batch_size", "accum"])
def test_batches_past_the_training_records_are_named_before_the_model_is_loaded(name, tmp_path):
    with pytest.raises(ValueError, match=rf"^data.{name}=1000000000 \(--data.{name.replace('_', '-')}\) must be at "
                                         r"most the 5 training records"):
        train(configure(BASE, **{name: 10**9}), tmp_path / "no-model", [{}] * 5)


def test_an_eval_batch_past_the_validation_records_gives_the_same_loss(setup):
    # the batch is clipped to the records (an array of 1e9 rows before)
    runs = [train(configure(BASE, total_steps=1, eval_batch_size=n), setup["model"], setup["train"],
                  setup["val"]) for n in (len(setup["val"]), 10**9)]
    assert runs[0].history[-1]["val_loss"] == runs[1].history[-1]["val_loss"]


def test_finetune_script_names_a_bad_option_in_one_line(tmp_path, capsys, monkeypatch):
    import sys

    from assocjax.cli import run_cli

    tune = _script("finetune")
    monkeypatch.setitem(sys.modules, tune.__name__, tune)  # tyro reads the Args class's source
    argv = ["--model", str(tmp_path / "no-model"), "--train", str(tmp_path / "no.jsonl"), "--out", str(tmp_path / "o")]
    for extra, expect in ((["--optim.lr", "nan"], "optim.lr=nan (--optim.lr)"),
                          (["--method.lora.alpha", "inf"], "method.lora.alpha=inf (--method.lora.alpha)"),
                          (["--method.lora.alpha", "1e30"], "method.lora.alpha=1e+30 (--method.lora.alpha)"),
                          (["--schedule.total-steps", "0"], "schedule.total_steps=0 (--schedule.total-steps)"),
                          (["--data.batch-size", "0"], "data.batch_size=0 (--data.batch-size)"),
                          (["--fold-seed", "-1"], "--fold-seed -1")):
        assert run_cli(tune.main, tune.Args, argv + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expect} must be ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_bad_configs(setup):
    bad = configure(BASE, lora=LoraConfig(targets=("qkv", "q")))
    with pytest.raises(ValueError, match="match no module.*q, k, v, o, gate, up, down"):
        train(bad, setup["model"], setup["train"])
    with pytest.raises(ValueError, match=r"^data.max_len=100 \(--data.max-len\) exceeds the model's 64 positions"):
        train(configure(BASE, max_len=100), setup["model"], setup["train"])
    with pytest.raises(ValueError, match=r"^method.name='adapter' \(--method.name\) is not one of lora, frozen, full"):
        train(configure(BASE, method="adapter"), setup["model"], setup["train"])
    with pytest.raises(ValueError, match=r"^method.lora.rank=1000000000 \(--method.lora.rank\) exceeds the model's "
                                         r"hidden size"):
        train(configure(BASE, lora=LoraConfig(rank=10**9, alpha=16.0)), setup["model"], setup["train"])


# -- the scripts --------------------------------------------------------------------------------
def _script(name):
    return load_script(name)


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
    cfg = configure(BASE, total_steps=2, eval_every=2)
    tune.main(tune.Args(model=setup["model"], train=tmp_path / "data" / "train.jsonl", out=tmp_path / "run",
                        val=tmp_path / "data" / "val.jsonl", tune=cfg))
    run = tmp_path / "run"
    written = {p.name for p in run.iterdir()}
    assert {"model", "adapters", "checkpoints", "history.csv", "history.json", "run.json"} <= written
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["steps"] == 2 and info["config"]["method"]["name"] == "lora"
    # the stories it was tuned on (score.py refuses to score it on them), and those it was validated on
    assert info["train_stories"] == sorted({r["story"] for r in train_recs}) and info["n_train"] == len(train_recs)
    assert info["val_stories"] == sorted({r["story"] for r in val_recs})
    assert (run / "history.csv").read_text().splitlines()[0] == "step,loss,val_loss,lr,tokens"
    assert {p.name for p in (run / "adapters").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    model, _ = load_pretrained(run / "model")
    assert model.cfg == load_pretrained(setup["model"], tokenizer=False)[0].cfg


@pytest.mark.parametrize("method", ["lora", "frozen"])
def test_bfloat16_train_step_does_not_convert_all_layers_at_once(method):
    """As the forwards of feature extraction and generation (test_models), the compiled step
    converts one layer's bfloat16 weights to float32 per loop iteration: its scratch memory
    grows by far less than one layer's float32 weights per layer (a hoisted float32 copy of
    every layer grows it by more)."""
    from flax import nnx

    from assocjax.models import CausalLM, from_hf
    from assocjax.tune import split_trainable
    from assocjax.tune.prompts import Batch

    S = jax.ShapeDtypeStruct
    temps = {}
    for n in (2, 6):
        cfg = from_hf(dict(model_type="llama", hidden_size=128, num_hidden_layers=n, num_attention_heads=4,
                           intermediate_size=512, vocab_size=64, max_position_embeddings=64))
        abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
        params = nnx.to_pure_dict(nnx.state(abstract.params, nnx.Param))
        tc = configure(TrainConfig(), method=method, dtype="bfloat16", layers="last:1")
        if method == "lora":
            trainable, base = jax.eval_shape(lambda: init_adapters(cfg, tc.method.lora, jax.random.key(0))), params
        else:
            trainable, base = jax.eval_shape(lambda p: split_trainable(p, (n - 1,)), params)
            trainable = jax.tree.map(lambda s: S(s.shape, jnp.float32), trainable)  # trained in float32
        spec = StepSpec.of(tc, cfg)
        opt_state = jax.eval_shape(optimizer(spec).init, trainable)
        batch = Batch(*[S((1, 1, 16), t) for t in (jnp.int32, bool, bool, jnp.int32, jnp.int32)])
        step = train_step.lower(spec, trainable, opt_state, base, batch, S((), jnp.int32), S((), jnp.float32),
                                jax.random.key(0))
        temps[n] = step.compile().memory_analysis().temp_size_in_bytes
    layer_f32 = 4 * (4 * 128 * 128 + 3 * 128 * 512)  # one layer's weights in float32
    assert (temps[6] - temps[2]) / 4 < 0.5 * layer_f32, (temps, layer_f32)
