"""What the language model reads per window (BOS), how windows are batched, and that the
weights are fingerprinted once per run. Tiny LLaMA + an offline LLaMA-style tokenizer."""
import types

import numpy as np
import pytest

from assocjax import features as F
from assocjax import fingerprint, stimuli
from assocjax.features import extract
from assocjax.models import load_pretrained
from assocjax.pipeline import design
from conftest import save_llama_tokenizer, save_tiny

RNG = np.random.default_rng(0)
VOCAB = ["the", "pie", "man", "struck", "again", "reporter", "wrote", "about", "it", "and", "nobody", "knew",
         "who", "he", "was", "city", "editor", "laughed", "story", "paper"]
WORDS = [str(w) for w in RNG.choice(VOCAB, 90)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random LLaMA (64 positions) whose tokenizer puts <s> before every text."""
    folder = tmp_path_factory.mktemp("llama_bos")
    save_llama_tokenizer(folder, [" ".join(WORDS), "Hello, world. It's a well-known fact!"], vocab_size=120)
    from transformers import AutoTokenizer
    n = len(AutoTokenizer.from_pretrained(str(folder)))
    save_tiny("llama", folder, vocab_size=n, max_position_embeddings=64)
    return load_pretrained(folder)


def test_every_window_starts_with_bos(llama):
    model, tok = llama
    ids, word_of, prefix = F.word_token_index(tok, WORDS)
    assert prefix == (tok.bos_token_id,) and tok.bos_token_id not in ids.tolist()
    context, stride = 24, 8
    feats = F.word_features(model, tok, WORDS, context=context, stride=stride)
    wins = F.windows(len(ids), context - 1, stride)  # the BOS takes one of the context positions
    assert len(wins) > 4
    forwards = {w: np.asarray(model.hidden_states(np.r_[prefix, ids[w[0]:w[2]]][None]))[:, 0] for w in wins}
    for i in range(len(WORDS)):
        last = np.flatnonzero(word_of == i)[-1]
        win = next(w for w in wins if w[1] <= last < w[2])
        assert last - win[0] >= context - 1 - stride or win[0] == 0  # the same causal-context rule as without BOS
        np.testing.assert_allclose(feats[:, i], forwards[win][:, 1 + last - win[0]], atol=1e-5, err_msg=f"word {i}")
    # Without its BOS a mid-story window reads differently: the BOS is what changes them.
    i = len(WORDS) - 1
    last = np.flatnonzero(word_of == i)[-1]
    start, _, _ = next(w for w in wins if w[1] <= last < w[2])
    no_bos = np.asarray(model.hidden_states(ids[None, start:last + 1]))[:, 0, -1]
    assert not np.allclose(feats[-1, i], no_bos[-1], atol=1e-3)


def test_bos_windows_respect_the_models_positions(llama):
    model, tok = llama
    feats = F.word_features(model, tok, WORDS, context=64, stride=32)  # 1 BOS + 63 tokens = all 64 positions
    assert np.isfinite(feats).all()
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        F.word_features(model, tok, WORDS, context=65, stride=32)
    with pytest.raises(ValueError, match=r"stride <= context - 1"):
        F.word_features(model, tok, WORDS, context=32, stride=32)


def test_story_in_one_window_equals_full_prefix_with_bos(llama):
    model, tok = llama
    words = WORDS[:20]
    ids, word_of, prefix = F.word_token_index(tok, words)
    assert len(ids) < 63
    feats = F.word_features(model, tok, words, context=64, stride=32, pooling="mean")
    tokens = np.asarray(model.hidden_states(np.r_[prefix, ids][None]))[:, 0, 1:]
    for i in (0, 7, 19):
        np.testing.assert_allclose(feats[:, i], tokens[:, word_of == i].mean(1), atol=1e-5)


def test_batches_are_never_padded_with_empty_windows(llama, monkeypatch):
    model, tok = llama
    shapes = []
    real = extract.forward_hidden_top
    monkeypatch.setattr(extract, "forward_hidden_top", lambda cfg, p, ids: shapes.append(ids.shape) or real(cfg, p, ids))
    ids, _, _ = F.word_token_index(tok, WORDS)
    n_windows = len(F.windows(len(ids), 23, 8))
    full = F.word_features(model, tok, WORDS, context=24, stride=8, batch_size=8 * n_windows)
    assert shapes == [(n_windows, 24)]  # batch = min(batch_size, windows): no empty rows
    shapes.clear()
    batched = F.word_features(model, tok, WORDS, context=24, stride=8, batch_size=3)
    assert [s[0] for s in shapes] == [3] * (n_windows // 3) + ([n_windows % 3] if n_windows % 3 else [])
    np.testing.assert_allclose(batched, full, atol=1e-5)


def _stories(n: int = 3) -> list:
    """Stories of 30 words (name, transcript, word_times), as design.word_feats reads them."""
    stories = []
    for k in range(n):
        words = WORDS[10 * k:10 * k + 30]
        t = stimuli.Transcript(tuple(words), np.arange(30.0), np.arange(30.0) + 0.5)
        stories.append(types.SimpleNamespace(name=f"s{k}", transcript=t, word_times=t.times()[0]))
    return stories


def test_weights_are_hashed_once_per_run(llama, tmp_path, monkeypatch):
    model, tok = llama
    calls = []
    real = fingerprint.weights_id
    monkeypatch.setattr(fingerprint, "weights_id", lambda m: calls.append(1) or real(m))
    stories = _stories()
    sel = types.SimpleNamespace(stories=stories, context=24, stride=8, layers=(0, 3), model_folder=tmp_path)
    opts = types.SimpleNamespace(batch_size=4, pooling="last")
    feats = design.word_feats(model, tok, sel, opts, tmp_path)
    assert len(calls) == 1 and len(feats) == 3
    for (heard, extra), s in zip(feats, stories):
        assert extra is None
        np.testing.assert_array_equal(heard, F.word_features(model, tok, list(s.transcript.words), 24, 8))
    design.word_feats(model, tok, sel, opts, tmp_path)  # all cached: hashed once more (one new run), never per story
    assert len(calls) == 2


def test_non_finite_features_are_refused_naming_the_model_and_the_layers(tmp_path):
    """Finite weights whose activations overflow float32 from block 1 on: hidden states 2 and
    up are NaN/Inf. Scoring them is refused before any ridge, naming the model folder and those
    hidden states; the layers below them still score."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "overflow"
    save_llama_tokenizer(folder, [" ".join(WORDS)], vocab_size=120)
    from transformers import AutoTokenizer
    save_tiny("llama", folder, vocab_size=len(AutoTokenizer.from_pretrained(str(folder))), max_position_embeddings=64)
    tensors = load_file(folder / "model.safetensors")
    big = {n: tensors[n] * np.float32(1e25) for n in ("model.layers.1.mlp.up_proj.weight",
                                                       "model.layers.1.mlp.down_proj.weight")}
    save_file({**tensors, **big}, folder / "model.safetensors", metadata={"format": "pt"})  # finite; their product not
    model, tok = load_pretrained(folder)  # every weight is finite
    stories = _stories(1)
    opts = types.SimpleNamespace(batch_size=4, pooling="last")
    sel = types.SimpleNamespace(stories=stories, context=24, stride=8, layers=(0, 1, 2, 3), model_folder=folder)
    with pytest.raises(ValueError, match=rf"^model {folder}: its word features of story 's0' hold NaN or Inf at hidden "
                                         r"state\(s\) 2, 3 \("):
        design.word_feats(model, tok, sel, opts, None)
    feats = design.word_feats(model, tok, types.SimpleNamespace(**{**vars(sel), "layers": (0, 1)}), opts, None)
    assert np.isfinite(feats[0][0][:2]).all()


def test_huge_or_zero_features_are_refused_naming_the_model(tmp_path):
    """MLP weights x1e12 in block 1 (the probe's "MLP weights x1e30" in small): finite features
    far above anything a model computes, and the final norm turns them into zeros. Both are
    refused before any ridge, naming the model folder."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "huge"
    save_llama_tokenizer(folder, [" ".join(WORDS)], vocab_size=120)
    from transformers import AutoTokenizer
    save_tiny("llama", folder, vocab_size=len(AutoTokenizer.from_pretrained(str(folder))), max_position_embeddings=64)
    tensors = load_file(folder / "model.safetensors")
    big = {n: tensors[n] * np.float32(1e12) for n in ("model.layers.1.mlp.up_proj.weight",
                                                       "model.layers.1.mlp.down_proj.weight")}
    save_file({**tensors, **big}, folder / "model.safetensors", metadata={"format": "pt"})
    model, tok = load_pretrained(folder)
    opts = types.SimpleNamespace(batch_size=4, pooling="last")
    sel = types.SimpleNamespace(stories=_stories(1), context=24, stride=8, layers=(0, 1, 2, 3), model_folder=folder)
    with pytest.raises(ValueError, match=rf"^model {folder}: its word features of story 's0' hold values above 1e\+18 "
                                         r"at hidden state\(s\) 2; only zeros at hidden state\(s\) 3 \("):
        design.word_feats(model, tok, sel, opts, None)
