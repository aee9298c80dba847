"""LLaMA (Hugging Face model_type "llama")."""
from ..family import Family
from .config import config
from .modeling import block, embed, final_norm
from .params import PREFIXES, RULES, param_spec

FAMILY = Family(
    name="llama", model_types=("llama",), config=config, param_spec=param_spec, rules=RULES, prefixes=PREFIXES,
    embed=embed, block=block, final_norm=final_norm, embedding="embed",
    lora_targets=("q", "k", "v", "o", "gate", "up", "down"),
    lora_defaults=("q", "v"),  # the attention's query and value: the LoRA paper's setting, PEFT's default
    peft_modules={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                  "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},
    peft_blocks="model.layers",
)
