"""Shared fixtures: tiny random Hugging Face checkpoints built offline with torch."""
from pathlib import Path

import jax
import pytest

# CPU float32 matmuls are exact already; on accelerators this keeps reference checks honest.
jax.config.update("jax_default_matmul_precision", "highest")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def save_tiny(kind: str, folder: Path, dtype: str = "float32", shard: str | None = None, **overrides) -> Path:
    """Save a tiny random GPT-2 or LLaMA checkpoint (config.json + safetensors) into folder."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if kind == "gpt2":
        base = dict(n_embd=32, n_layer=3, n_head=4, vocab_size=101, n_positions=48, bos_token_id=0, eos_token_id=0)
        cfg = GPT2Config(**{**base, **overrides})
    else:
        base = dict(hidden_size=32, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
        cfg = LlamaConfig(**{**base, **overrides})
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # non-trivial norms, so a mixed-up scale or bias would show
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    kw = {} if shard is None else {"max_shard_size": shard}
    model.save_pretrained(folder, **kw)
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> folder for every variant the loader must handle."""
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "gpt2": save_tiny("gpt2", root / "gpt2"),
        "gpt2_untied": save_tiny("gpt2", root / "gpt2_untied", tie_word_embeddings=False),
        "llama_gqa": save_tiny("llama", root / "llama_gqa"),
        "llama_tied_mha": save_tiny("llama", root / "llama_tied_mha", num_key_value_heads=4, tie_word_embeddings=True),
        "llama_bf16": save_tiny("llama", root / "llama_bf16", dtype="bfloat16"),
        "llama_sharded": save_tiny("llama", root / "llama_sharded", shard="20KB", rope_theta=500.0),
    }
