"""GPT-NeoX, the architecture of the Pythia suite (EleutherAI/pythia-70m ... -12b and their
training checkpoints): parallel attention + MLP, rotary embedding on a fraction of each
head, LayerNorm with biases, exact GELU, untied output head (`embed_out`). Its tokenizer is
a byte-level BPE (tokenizer.json) read by transformers' AutoTokenizer like any other.

LoRA targets (ours -> Hugging Face module in `gpt_neox.layers.N`): qkv
(attention.query_key_value, fused, adapted whole as PEFT does), out (attention.dense), fc
(mlp.dense_h_to_4h), proj (mlp.dense_4h_to_h); the default is qkv, PEFT's own default for
gpt_neox.
"""
from ..family import Family
from .config import config
from .modeling import block, embed, final_norm
from .params import HEAD, IGNORED, PREFIXES, RULES, param_spec

FAMILY = Family(
    name="gpt_neox", model_types=("gpt_neox",), config=config, param_spec=param_spec, rules=RULES, prefixes=PREFIXES,
    embed=embed, block=block, final_norm=final_norm, embedding="embed", head=HEAD, ignored=IGNORED,
    lora_targets=("qkv", "out", "fc", "proj"),
    lora_defaults=("qkv",),  # PEFT's default for gpt_neox: the fused query/key/value, adapted whole
    peft_modules={"qkv": "attention.query_key_value", "out": "attention.dense", "fc": "mlp.dense_h_to_4h",
                  "proj": "mlp.dense_4h_to_h"},
    peft_blocks="gpt_neox.layers",
)
