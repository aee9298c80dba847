"""Forward pass returning every layer's hidden states: assocjax (JAX/XLA) vs transformers
(PyTorch), same random weights, same tokens, same process.

    python benchmarks/forward.py                       # GPT-2 small + LLaMA-style ~same size
    python benchmarks/forward.py --batch 2 --seq 128   # quicker
"""
from __future__ import annotations

import dataclasses
import tempfile

import jax.numpy as jnp
import numpy as np
import torch
import tyro
from transformers import AutoModel, AutoModelForCausalLM, GPT2Config, LlamaConfig

from assocjax.models import load_pretrained
from assocjax.models.params import param_spec
from common import matmul_gflops, median_time


@dataclasses.dataclass
class Config:
    batch: int = 8
    seq: int = 512
    repeats: int = 5
    models: tuple[str, ...] = ("gpt2-small", "llama-small")
    seed: int = 0


CONFIGS = {
    "gpt2-small": lambda: GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "llama-small": lambda: LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                       num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
                                       max_position_embeddings=2048),
}


def model_flops(cfg, batch, seq):
    """Multiply-adds x 2 of the per-layer matmuls and of attention (QK^T and PV over the
    full S x S square, as both implementations compute it)."""
    # every block's weight matrix (L, in, out) is one in x out product per token
    matrices = [p.shape for p in param_spec(cfg)["layers"].values() if p.role == "matrix"]
    per_token = 2 * sum(int(np.prod(shape)) for shape in matrices)
    attn = 2 * 2 * cfg.n_layers * seq * cfg.n_heads * cfg.head_dim
    return batch * seq * (per_token + attn)


def main(cfg: Config):
    torch.manual_seed(cfg.seed)
    mm = matmul_gflops()
    print(f"float32 matmul (4096x768 @ 768x3072, XLA): {mm:.0f} GFLOP/s; torch threads {torch.get_num_threads()}")
    print(f"{'model':<14}{'params':>9}{'assocjax tok/s':>16}{'torch tok/s':>13}{'speed-up':>10}{'GFLOP/s':>9}{'of matmul':>11}{'max|dh|':>10}")
    for name in cfg.models:
        hf_cfg = CONFIGS[name]()
        with tempfile.TemporaryDirectory() as tmp:
            AutoModelForCausalLM.from_config(hf_cfg).save_pretrained(tmp)
            ours, _ = load_pretrained(tmp, tokenizer=False)
            ref = AutoModel.from_pretrained(tmp, dtype=torch.float32).eval()
        ids = np.random.default_rng(cfg.seed).integers(0, hf_cfg.vocab_size, (cfg.batch, cfg.seq))
        t_ids = torch.tensor(ids)
        with torch.inference_mode():
            t_ref = median_time(lambda: ref(t_ids, output_hidden_states=True), cfg.repeats)
            hs_ref = ref(t_ids, output_hidden_states=True).hidden_states
        params, j_ids = ours.param_tree(), jnp.asarray(ids)
        from assocjax.models import forward_hidden
        t_ours = median_time(lambda: forward_hidden(ours.cfg, params, j_ids).block_until_ready(), cfg.repeats)
        hs = np.asarray(forward_hidden(ours.cfg, params, j_ids))
        err = max(float(np.abs(hs[i] - h.numpy()).max()) for i, h in enumerate(hs_ref))
        tokens = cfg.batch * cfg.seq
        gflops = model_flops(ours.cfg, cfg.batch, cfg.seq) / t_ours / 1e9
        n_params = sum(p.numel() for p in ref.parameters()) / 1e6
        print(f"{name:<14}{n_params:>8.0f}M{tokens / t_ours:>16.0f}{tokens / t_ref:>13.0f}{t_ref / t_ours:>9.2f}x"
              f"{gflops:>9.0f}{gflops / mm:>10.0%}{err:>10.1e}")


if __name__ == "__main__":
    main(tyro.cli(Config))
