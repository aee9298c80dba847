"""Decoder LMs in Flax NNX, loaded from Hugging Face checkpoints: one folder per
architecture family (gpt2/, llama/), listed in `registry`."""
from .common import LoraInputs
from .config import ModelConfig
from .generation import Generation, generate, generate_tokens, sample_logits
from .loading import build_model, load_pretrained
from .modeling import CausalLM, forward, forward_hidden, forward_logits
from .registry import SUPPORTED, from_hf

__all__ = ["SUPPORTED", "ModelConfig", "from_hf", "build_model", "load_pretrained", "CausalLM",
           "LoraInputs", "forward", "forward_hidden", "forward_logits", "Generation", "generate",
           "generate_tokens", "sample_logits"]
