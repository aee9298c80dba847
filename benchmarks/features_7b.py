"""Word features of a real story from a LLaMA-2-7B-shaped model in bfloat16 on the CPU:
wall time, peak memory and throughput (the target: peak RSS <= 16 GiB).

The checkpoint has random weights (hidden 4096, 32 layers, 32 heads, MLP 11008, vocab
32000: 6.74 B parameters, 13.5 GB of bfloat16 safetensors in 2-layer shards), written with
numpy only, and a LLaMA-style BPE tokenizer (<s> before every text) trained offline on the
Narratives Gentle words (2000 tokens, which gives about 1.3 tokens per word as LLaMA-2's
tokenizer does; no SentencePiece model is available offline). The measurement runs
in a fresh process: load (`load_pretrained(dtype=bfloat16)`), the weights' fingerprint
(once), then `word_features` of the story through the feature cache. Peak RSS is the
process's VmHWM; the checkpoint stays on disk for reruns until deleted (`--cleanup`).

    python benchmarks/features_7b.py                       # pieman, context 1024 / stride 512
    python benchmarks/features_7b.py --layers 4 --cleanup  # a quick, smaller check
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "tests"))
from conftest import save_llama_tokenizer, save_random_llama  # noqa: E402  (the tests' checkpoint writers)
from common import WORK  # noqa: E402


@dataclasses.dataclass
class Config:
    story: str = "pieman"
    context: int = 1024
    stride: int = 512
    batch_size: int = 8
    layers: int = 32
    """LLaMA-2-7B has 32; fewer gives a quick check of the same shapes"""
    folder: Path = WORK / "llama2-7b-random-bf16"
    """where the checkpoint is written (13.5 GB, kept for reruns; default under .assocjax_cache/bench in this
    repository, ignored by git)"""
    cleanup: bool = False
    """delete the checkpoint afterwards"""
    shared: Path = SHARED


MEASURE = r"""
import json, sys, time
import jax, jax.numpy as jnp
from assocjax import features as F, fingerprint, stimuli

def hwm_gib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 2**20

folder, gentle, story, context, stride, batch, cache_dir = sys.argv[1:8]
out = dict(rss_start_gib=hwm_gib())
t0 = time.perf_counter()
from assocjax.models import load_pretrained
model, tok = load_pretrained(folder, dtype=jnp.bfloat16)
out.update(load_s=time.perf_counter() - t0, rss_after_load_gib=hwm_gib(),
           model_gib=sum(a.nbytes for a in jax.tree.leaves(model.param_tree())) / 2**30)
t0 = time.perf_counter()
weights_id = fingerprint.weights_id(model)
out.update(hash_s=time.perf_counter() - t0)
reading = stimuli.story_alignment(gentle, story).reading()
tokens = F.word_token_index(tok, reading)
out.update(words=len(reading), tokens=len(tokens.ids), prefix=list(tokens.prefix), text_source=reading.source,
           windows=len(F.windows(len(tokens.ids), int(context) - len(tokens.prefix), int(stride))))
t0 = time.perf_counter()
feats = F.word_features(model, tok, reading, int(context), int(stride), batch_size=int(batch), cache_dir=cache_dir,
                        weights_id=weights_id)
out.update(features_s=time.perf_counter() - t0, shape=list(feats.shape), finite=bool(all(
    __import__("numpy").isfinite(feats[l]).all() for l in range(feats.shape[0]))))
t0 = time.perf_counter()
again = F.word_features(model, tok, reading, int(context), int(stride), batch_size=int(batch), cache_dir=cache_dir,
                        weights_id=weights_id)
out.update(cached_s=time.perf_counter() - t0, peak_rss_gib=hwm_gib())
print("RESULT " + json.dumps(out))
"""


def main(cfg: Config):
    t0 = time.perf_counter()
    print(f"checkpoint folder: {cfg.folder.resolve()} (--folder)", flush=True)
    folder = cfg.folder if cfg.layers == 32 else cfg.folder.with_name(cfg.folder.name + f"-{cfg.layers}l")
    if not (folder / "config.json").is_file():
        print(f"writing the random checkpoint to {folder} ...", flush=True)
        total, _ = save_random_llama(folder, hidden=4096, layers=cfg.layers, heads=32, kv_heads=32,
                                     intermediate=11008, vocab=32000, dtype="bfloat16", positions=4096,
                                     layers_per_shard=2)
        gentle = cfg.shared / "narratives" / "stimuli" / "gentle"
        texts = [" ".join(row.split(",")[0] for row in (d / "align.csv").read_text().splitlines())
                 for d in sorted(gentle.iterdir()) if (d / "align.csv").is_file()]
        save_llama_tokenizer(folder, texts, vocab_size=2000)  # ~1.3 tokens per word, like LLaMA-2's on these stories
        print(f"  {total / 1e9:.1f} GB in {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        cmd = [sys.executable, "-c", MEASURE, str(folder), str(cfg.shared / "narratives" / "stimuli" / "gentle"),
               cfg.story, str(cfg.context), str(cfg.stride), str(cfg.batch_size), cache_dir]
        t1 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t1
    if run.returncode:
        print(run.stderr[-4000:])
        raise SystemExit(f"measurement failed (exit {run.returncode})")
    r = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{cfg.story}: {r['words']} words, {r['tokens']} tokens (+ BOS {r['prefix']} per window), "
          f"{r['windows']} windows of {cfg.context} (stride {cfg.stride}), batch {min(cfg.batch_size, r['windows'])}; "
          f"text: {r['text_source']}")
    print(f"model: {r['model_gib']:.2f} GiB bfloat16 ({cfg.layers} layers); features {r['shape']} finite={r['finite']}")
    print(f"load {r['load_s']:.0f} s | weights hash (once) {r['hash_s']:.0f} s | features {r['features_s']:.0f} s "
          f"({r['tokens'] / r['features_s']:.2f} tokens/s, {r['words'] / r['features_s']:.2f} words/s) | "
          f"cached reload {r['cached_s']:.1f} s | whole process {wall:.0f} s")
    print(f"peak RSS: {r['peak_rss_gib']:.2f} GiB (after loading: {r['rss_after_load_gib']:.2f} GiB; "
          f"at start: {r['rss_start_gib']:.2f} GiB); target <= 16 GiB: {'met' if r['peak_rss_gib'] <= 16 else 'NOT met'}")
    print(f"uptime: {uptime}")
    if cfg.cleanup:
        shutil.rmtree(folder)
        print(f"deleted {folder}")


if __name__ == "__main__":
    main(tyro.cli(Config))
