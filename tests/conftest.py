"""Shared fixtures: tiny random Hugging Face checkpoints built offline with torch."""
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

# CPU float32 matmuls are exact already; on accelerators this keeps reference checks honest.
jax.config.update("jax_default_matmul_precision", "highest")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config):
    """Every compiled program goes to a persistent compilation cache of this session (a new
    temporary folder): the modules that score the same shapes after `_drop_compiled_programs`
    load them from disk instead of compiling again (a tiny world's first score.py run: 26 s,
    9.5 s with the programs on disk). Not inherited by the tests' subprocesses; removed at the end."""
    config._jax_cache_dir = tempfile.mkdtemp(prefix="assocjax-tests-jax-")
    jax.config.update("jax_compilation_cache_dir", config._jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # the default 1 s skips most programs
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # and every size


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_jax_cache_dir", ""), ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Drop every compiled program when a test module ends. The suite runs in one process and
    each XLA CPU executable holds memory maps of its own: the whole suite reached the kernel's
    limit of 65,530 maps per process (vm.max_map_count) near its end and XLA's compiler
    segfaulted. The programs another module needs again come back from the session's
    persistent compilation cache (pytest_configure)."""
    yield
    jax.clear_caches()


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


@pytest.fixture(scope="session")
def small_builtin(tmp_path_factory):
    """The default built-in world, smaller (tests/pinned_runs.py's: its 3 stories and 12 subjects,
    120 TRs, 300 vertices), built once for the modules that score it: (its options, a function
    that fills an empty cache folder with what `ensure_builtin` would have written there, the world
    and the feature cache of its build; copied, so each module still owns its cache)."""
    from assocjax.pipeline import SyntheticOptions
    from assocjax.pipeline.assets import ensure_builtin

    opts = SyntheticOptions(story_trs=120, space="tinysphere", n_vertices=300)
    built = tmp_path_factory.mktemp("small-builtin") / "cache"
    ensure_builtin(opts, built, progress=False)

    def into(cache_dir: Path) -> Path:
        shutil.copytree(built, cache_dir)
        return cache_dir

    return opts, into


def save_llama_tokenizer(folder: Path, texts, vocab_size: int = 400) -> Path:
    """A LLaMA-style BPE tokenizer ("▁" word marks, <s> added before every text) trained
    offline on `texts`; saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    backend.train_from_iterator(list(texts), trainers.BpeTrainer(vocab_size=vocab_size,
                                                                 special_tokens=["<unk>", "<s>", "</s>"]))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", backend.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(str(folder))
    return folder


def save_random_llama(folder: Path, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                      vocab: int, dtype: str = "bfloat16", positions: int = 4096, layers_per_shard: int | None = None,
                      seed: int = 0) -> tuple[int, int]:
    """A random LLaMA checkpoint written with numpy only (no torch), shard by shard so that
    a 7B-sized one never needs more than one shard in memory. Returns (bytes of all tensors,
    bytes of the largest one)."""
    import json

    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32}[dtype]
    rng = np.random.default_rng(seed)
    hd = hidden // heads

    def rand(*shape):
        return (0.02 * rng.standard_normal(shape, np.float32)).astype(np_dtype)

    def norm():
        return (1 + 0.1 * rng.standard_normal(hidden, np.float32)).astype(np_dtype)

    def layer(i):
        p = f"model.layers.{i}."
        return {p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
                p + "self_attn.q_proj.weight": rand(heads * hd, hidden), p + "self_attn.k_proj.weight": rand(kv_heads * hd, hidden),
                p + "self_attn.v_proj.weight": rand(kv_heads * hd, hidden), p + "self_attn.o_proj.weight": rand(hidden, heads * hd),
                p + "mlp.gate_proj.weight": rand(intermediate, hidden), p + "mlp.up_proj.weight": rand(intermediate, hidden),
                p + "mlp.down_proj.weight": rand(hidden, intermediate)}

    per = layers_per_shard or layers
    groups = [list(range(a, min(a + per, layers))) for a in range(0, layers, per)]
    shards = [{"model.embed_tokens.weight": rand(vocab, hidden)}] + [None] * len(groups) + [
        {"model.norm.weight": norm(), "lm_head.weight": rand(vocab, hidden)}]
    n = len(shards)
    weight_map, total, largest = {}, 0, 0
    for k in range(n):
        tensors = shards[k] if shards[k] is not None else {a: b for i in groups[k - 1] for a, b in layer(i).items()}
        name = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file(tensors, str(folder / name))
        weight_map |= {t: name for t in tensors}
        total += sum(a.nbytes for a in tensors.values())
        largest = max([largest] + [a.nbytes for a in tensors.values()])
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": weight_map}))
    cfg = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=hidden, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
               vocab_size=vocab, max_position_embeddings=positions, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=False, hidden_act="silu", torch_dtype=dtype, bos_token_id=1, eos_token_id=2)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return total, largest


def save_peft_adapter(base, config, folder: Path):
    """A PEFT adapter made by PEFT itself on a transformers model, its B matrices drawn at random
    (PEFT initialises them to 0, which would hide a wrong mapping), saved into `folder`; the
    PEFT model (its logits are the reference)."""
    import peft
    import torch

    model = peft.get_peft_model(base, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(folder)
    return model


# The F ground-truth world (tests/test_compare.py, tests/test_partition.py): a GPT-2 whose hidden
# state 0 is context-free, so the heard words' features hold nothing of the associates.
GT_SPACE, GT_VOCAB = "gtsphere", 120
# Higher than the default SNR: every extra feature costs a fit some noise, and the claims under
# test ("F ~ 0 outside MTL") concern the planted signal, not small-sample overfitting.
GT_SNR = {"language_stg": 4.0, "frontal_ifg": 2.0, "parietal_angular": 2.0, "mtl_hippocampus": 2.0,
          "mtl_parahippocampal": 1.5, "visual_control": 0.0}


def context_free_world(tmp: Path, n_stories: int, n_subjects: int, story_trs: int, n_vertices: int):
    """(model folder, model, tokenizer, dataset root): a 1-block GPT-2 without position embeddings
    and a synthetic dataset planted from its hidden state 0: heard words everywhere, the associates'
    features in MTL."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from assocjax.data.synthetic import SyntheticConfig, make_synthetic, pseudo_words
    from assocjax.features import word_features
    from assocjax.models import load_pretrained
    from assocjax.pipeline import SyntheticOptions
    from assocjax.pipeline.assets import save_random_gpt2, save_tokenizer

    vocab = pseudo_words(GT_VOCAB, np.random.default_rng([0, 0]))  # the generator's vocabulary stream
    model_dir = tmp / "model"
    save_tokenizer(vocab, model_dir)
    save_random_gpt2(SyntheticOptions(n_layers=1, hidden=8, n_heads=2, positions=512), GT_VOCAB + 2, model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    save_file({k: (np.zeros_like(v) if "wpe" in k else v) for k, v in weights.items()}, str(model_dir / "model.safetensors"))
    model, tok = load_pretrained(model_dir)
    root = tmp / "narratives"
    make_synthetic(SyntheticConfig(out=root, n_stories=n_stories, n_subjects=n_subjects, story_trs=story_trs,
                                   vocab_size=GT_VOCAB, space=GT_SPACE, n_vertices=n_vertices, planted_layer=0, seed=0,
                                   snr=GT_SNR),
                   features=lambda words: word_features(model, tok, list(words), 512, 256)[0])
    return model_dir, model, tok, root
