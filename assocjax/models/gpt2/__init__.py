"""GPT-2 (Hugging Face model_type "gpt2")."""
from ..family import Family
from .config import config
from .modeling import block, embed, final_norm
from .params import IGNORED, PREFIXES, RULES, param_spec

FAMILY = Family(
    name="gpt2", model_types=("gpt2",), config=config, param_spec=param_spec, rules=RULES, prefixes=PREFIXES,
    embed=embed, block=block, final_norm=final_norm, embedding="wte", ignored=IGNORED,
    lora_targets=("qkv", "out", "fc", "proj"),
    # the fused query/key/value projection (attn.c_attn) adapted as one matrix, so the key columns
    # are adapted too: exactly what PEFT does with target_modules=["c_attn"], its GPT-2 default
    lora_defaults=("qkv",),
    peft_modules={"qkv": "attn.c_attn", "out": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"},
    peft_blocks="transformer.h",
    fan_in_fan_out=True,  # Conv1D stores weights (in, out)
)
