"""Decoder LMs (GPT-2, LLaMA family) in Flax NNX, loaded from Hugging Face checkpoints."""
from .config import SUPPORTED, ModelConfig, from_hf
from .generation import Generation, generate, generate_tokens, sample_logits
from .loading import build_model, load_pretrained
from .modeling import CausalLM, LoraInputs, forward, forward_hidden, forward_logits

__all__ = ["SUPPORTED", "ModelConfig", "from_hf", "build_model", "load_pretrained", "CausalLM",
           "LoraInputs", "forward", "forward_hidden", "forward_logits", "Generation", "generate",
           "generate_tokens", "sample_logits"]
