"""One prepared script for a lent accelerator (issue 26): run once, it measures

  (a) word features of a LLaMA-2-7B-shaped model in bfloat16 (random weights drawn on the device:
      hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000), batches of 8 x 1024 tokens with
      every hidden state: tokens/s and MFU against the card's dense bf16 peak;
  (b) the nested ridge at one story's layer shape (`engine.py`, fsaverage6-sized target counts):
      us per target and its share of a float32 matmul measured in the same process;
  (c) the whole pipeline for one story (`pipeline.py --generate-subjects N`, all 13 GPT-2 layers);

and from (a)-(c) a projection, with its arithmetic, of the whole Narratives dataset (every story
and usable listener in ../shared's metadata, 73,732 fsaverage6 vertices outside the medial wall)
for GPT-2's 13 hidden states and LLaMA-2-7B's 33.

    python benchmarks/accelerator.py                      # on the lent machine (~8-10 min)
    python benchmarks/accelerator.py --small              # a CPU smoke run of the same code paths

Prints one JSON record (also written to --out). Nothing here was run on an accelerator yet.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0}  # dense, no sparsity
VERTICES = 73732  # fsaverage6 outside the medial wall
GPT2_LAYERS, LLAMA_LAYERS = 13, 33


@dataclasses.dataclass
class Config:
    small: bool = False
    """tiny shapes, for a CPU check of the code paths (numbers meaningless)"""
    peak_bf16_tflops: float | None = None
    """the card's dense bf16 peak (None: from the device kind, PEAK_BF16_TFLOPS)"""
    subjects: int = 8
    """listeners generated for (c)"""
    ridge_targets: int = 655360
    metadata: Path = SHARED / "narratives"
    tokenizer: Path = SHARED / "tokenizers" / "gpt2"
    work: Path = Path("/tmp/assocjax_accel")
    out: Path | None = None
    skip: tuple[str, ...] = ()
    """parts to leave out: features, ridge, pipeline"""


def llama_features(cfg: Config) -> dict:
    from assocjax.models import from_hf
    from assocjax.models.modeling import forward_hidden_top
    from assocjax.models.params import WEIGHT_ROLES, param_spec

    hf = dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=32, intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
              rms_norm_eps=1e-5, tie_word_embeddings=False)
    batch, seq = 8, 1024
    if cfg.small:
        hf.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=256, vocab_size=512)
        batch, seq = 2, 64
    mcfg = from_hf(hf, "LLaMA-2-7B's shape")
    spec = param_spec(mcfg)
    keys = iter(jax.random.split(jax.random.key(0), 64))

    def draw(p):
        if p.role in WEIGHT_ROLES:
            return (jax.random.normal(next(keys), p.shape, jnp.float32) * 0.02).astype(jnp.bfloat16)
        return (jnp.ones if p.role == "scale" else jnp.zeros)(p.shape, jnp.bfloat16)

    params = {k: ({n: draw(q) for n, q in v.items()} if k == "layers" else draw(v)) for k, v in spec.items()}
    n_params = sum(a.size for a in jax.tree.leaves(params))
    embed = hf["vocab_size"] * hf["hidden_size"] * 2  # input and output embeddings: no matmul per token in the forward
    ids = jax.random.randint(jax.random.key(1), (batch, seq), 0, hf["vocab_size"])
    run = lambda: jax.block_until_ready(forward_hidden_top(mcfg, params, ids))  # noqa: E731
    t0 = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    d, layers = hf["hidden_size"], hf["num_hidden_layers"]
    # matmul FLOPs per token: 2 x the non-embedding weights, plus the S x S attention products (full, as forward.py)
    per_token = 2 * (n_params - embed) + 4 * layers * seq * d
    kind = jax.devices()[0].device_kind
    peak = cfg.peak_bf16_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)
    tok_s = batch * seq / s
    return dict(device=kind, params=int(n_params), batch=batch, seq=seq, compile_s=round(compile_s, 1),
                seconds=round(s, 4), tokens_per_s=round(tok_s, 1), tflops=round(tok_s * per_token / 1e12, 2),
                peak_bf16_tflops=peak, mfu=round(tok_s * per_token / 1e12 / peak, 3) if peak else None,
                flops_per_token=int(per_token))


def subprocess_json(cmd: list[str], marker: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        return dict(failed=done.returncode, stderr=done.stderr[-3000:])
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else dict(stdout=done.stdout[-3000:])


def dataset_totals(metadata: Path) -> dict:
    """Every story's usable listeners (scans not excluded; one fit each, plus their mean) and TRs."""
    from assocjax.data.layout import load_dataset

    ds = load_dataset(metadata)
    per = {}
    for scan in ds.all_scans:
        if scan.excluded:
            continue
        for story in scan.stories:
            row = per.setdefault(story.name, dict(listeners=set(), trs=story.n_trs, words=0))
            row["listeners"].add(scan.subject)
    gentle = metadata / "stimuli" / "gentle"
    for name, row in per.items():
        align = gentle / name / "align.csv"
        row["words"] = len(align.read_text().splitlines()) if align.is_file() else 0
        row["listeners"] = len(row["listeners"])
    return per


def project(totals: dict, feats: dict | None, ridge: dict | None, pipe: dict | None) -> dict:
    """Whole-dataset time = features (tokens / tokens per s) + ridge (targets x layers x us per
    target) + BOLD read (scans x the measured seconds per scan); each term with its inputs."""
    fits = sum(r["listeners"] + 1 for r in totals.values())
    scans = sum(r["listeners"] for r in totals.values())
    words = sum(r["words"] for r in totals.values())
    out = dict(stories=len(totals), listener_story_pairs=scans, fits=fits, targets_per_layer=fits * VERTICES,
               words=words, tokens_llama=round(1.3 * words), tokens_gpt2=round(1.2 * words),
               note="tokens ~1.3 (LLaMA) / ~1.2 (GPT-2) per word; windows of 1024 with stride 512 forward each token "
                    "about twice: counted as 2x")
    us = ridge.get("us_per_target") if ridge else None
    bold_per_scan = None
    if pipe and pipe.get("run_json"):
        bold_per_scan = pipe["run_json"]["stages"]["bold"]["seconds"] / max(pipe.get("n_subjects", 1), 1)
    for name, layers, tok_s, tokens in (("gpt2", GPT2_LAYERS, None, out["tokens_gpt2"]),
                                        ("llama2_7b", LLAMA_LAYERS, feats and feats.get("tokens_per_s"), out["tokens_llama"])):
        ridge_s = fits * VERTICES * layers * us / 1e6 if us else None
        feat_s = 2 * tokens / tok_s if tok_s else None
        bold_s = scans * bold_per_scan if bold_per_scan else None
        parts = dict(ridge_s=ridge_s, features_s=feat_s, bold_s=bold_s)
        out[name] = dict(parts, total_min=round(sum(v for v in parts.values() if v) / 60, 2),
                         arithmetic=f"ridge {fits} fits x {VERTICES} vertices x {layers} layers x {us} us; "
                                    f"features 2 x {tokens} tokens / {tok_s} tok/s; BOLD {scans} scans x {bold_per_scan} s")
    return out


def main(cfg: Config) -> dict:
    rec = dict(devices=[str(d) for d in jax.devices()], jax=jax.__version__)
    if "features" not in cfg.skip:
        rec["features"] = llama_features(cfg)
        print("features", json.dumps(rec["features"]), flush=True)
    if "ridge" not in cfg.skip:
        n = 16384 if cfg.small else cfg.ridge_targets
        rec["ridge"] = subprocess_json(["benchmarks/engine.py", "--n-targets", str(n), "--chunk", str(min(n, 65536))])
        print("ridge", json.dumps(rec["ridge"])[:600], flush=True)
    if "pipeline" not in cfg.skip and not cfg.small:
        rec["pipeline"] = subprocess_json(["benchmarks/pipeline.py", "--work", str(cfg.work), "--metadata",
                                           str(cfg.metadata), "--tokenizer", str(cfg.tokenizer),
                                           "--generate-subjects", str(cfg.subjects)])
        print("pipeline", json.dumps({k: rec["pipeline"].get(k) for k in ("wall_s", "peak_rss_gib", "run_json")}),
              flush=True)
    rec["projection"] = project(dataset_totals(cfg.metadata), rec.get("features"), rec.get("ridge"), rec.get("pipeline"))
    print(json.dumps(rec["projection"], indent=1))
    if cfg.out is not None:
        cfg.out.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    return rec


if __name__ == "__main__":
    main(tyro.cli(Config))
