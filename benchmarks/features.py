"""Word features of a real story: assocjax windowed extraction vs (a) the per-word
full-context forward pass of earlier brain-score code and (b) transformers (PyTorch)
running the same windows. GPT-2-small-sized random weights, same process.

    python benchmarks/features.py                        # tunnel, context 1024 / stride 512
    python benchmarks/features.py --story pieman --naive-words 10
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import tyro
from transformers import AutoModel, AutoModelForCausalLM, GPT2Config

from assocjax import features as F
from assocjax import stimuli
from assocjax.models import load_pretrained

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@dataclasses.dataclass
class Config:
    story: str = "tunnel"
    context: int = 1024
    stride: int = 512
    batch_size: int = 4
    naive_words: int = 12
    """words timed for the per-word baseline (all with a full 1024-token prefix); its rate is extrapolated"""
    shared: Path = SHARED


def torch_windows(model, ids, word_of, n_words, context, stride, batch_size):
    """The same windows and last-token pooling, in PyTorch."""
    wins = F.windows(len(ids), context, stride)
    width = min(context, len(ids))
    out = None
    with torch.inference_mode():
        for b0 in range(0, len(wins), batch_size):
            chunk = wins[b0:b0 + batch_size]
            batch = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, (s, _, e) in enumerate(chunk):
                batch[j, : e - s] = torch.as_tensor(ids[s:e])
            hs = torch.stack(model(batch, output_hidden_states=True).hidden_states)
            if out is None:
                out = np.zeros((hs.shape[0], len(ids), hs.shape[-1]), np.float32)
            for j, (s, first, e) in enumerate(chunk):
                out[:, first:e] = hs[:, j, first - s:e - s].numpy()
    return F.pool_words(out, word_of, n_words, "last")


def naive_rate(model, ids, word_of, context, n_words):
    """Seconds per word of one forward over each word's prefix (truncated to context)."""
    lasts = [np.flatnonzero(word_of == i)[-1] for i in range(len(set(word_of[word_of >= 0])))]
    chosen = [w for w, last in enumerate(lasts) if last >= context][:: max(1, len(lasts) // (4 * n_words))][:n_words]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for w in chosen:
            last = lasts[w]
            model(torch.as_tensor(ids[None, last + 1 - context:last + 1]), output_hidden_states=True)
    return (time.perf_counter() - t0) / len(chosen)


def main(cfg: Config):
    torch.manual_seed(0)
    transcript = stimuli.story_alignment(cfg.shared / "narratives" / "stimuli" / "gentle", cfg.story)
    words = list(transcript.words)
    with tempfile.TemporaryDirectory() as tmp:
        AutoModelForCausalLM.from_config(GPT2Config(n_embd=768, n_layer=12, n_head=12)).save_pretrained(tmp)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(cfg.shared / "tokenizers" / "gpt2" / f, Path(tmp) / f)
        ours, tok = load_pretrained(tmp)
        ref = AutoModel.from_pretrained(tmp, dtype=torch.float32).eval()
    ids, word_of, prefix = F.word_token_index(tok, words)
    assert not prefix, "GPT-2's tokenizer adds no BOS: the torch windows below need none"
    kw = dict(context=cfg.context, stride=cfg.stride, batch_size=cfg.batch_size)
    F.word_features(ours, tok, words, **kw)  # compile the window shape outside the timing (once per process)
    feats_ref = torch_windows(ref, ids, word_of, len(words), cfg.context, cfg.stride, cfg.batch_size)  # warm-up
    t0 = time.perf_counter()
    feats = F.word_features(ours, tok, words, **kw)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats_ref = torch_windows(ref, ids, word_of, len(words), cfg.context, cfg.stride, cfg.batch_size)
    t_torch = time.perf_counter() - t0
    per_word = naive_rate(ref, ids, word_of, cfg.context, cfg.naive_words)
    n = len(words)
    print(f"{cfg.story}: {n} words, {len(ids)} tokens, {len(F.windows(len(ids), cfg.context, cfg.stride))} windows "
          f"(context {cfg.context}, stride {cfg.stride}); max |delta| vs torch {np.abs(feats - feats_ref).max():.1e}")
    print(f"{'method':<44}{'words/s':>10}{'assocjax speed-up':>19}")
    print(f"{'assocjax windows (JAX, jit)':<44}{n / t_ours:>10.1f}{1.0:>18.2f}x")
    print(f"{'transformers windows (PyTorch)':<44}{n / t_torch:>10.1f}{t_torch / t_ours:>18.2f}x")
    print(f"{'per-word full context (PyTorch, extrapolated)':<44}{1 / per_word:>10.2f}{per_word * n / t_ours:>18.1f}x")


if __name__ == "__main__":
    main(tyro.cli(Config))
