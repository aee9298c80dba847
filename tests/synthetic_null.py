"""A null synthetic Narratives dataset for tests: every parcel's SNR is 0 (no stimulus signal
anywhere) and the noise is AR(1), so any brain score above chance is leakage.

    from synthetic_null import make_null_dataset
    root, manifest = make_null_dataset(tmp_path, rho=0.8)
    # python scripts/score.py --data.root {root} --data.space nullsphere --model.path ...

The same dataset from the command line (NULL_SNR_ARGS is the tyro dict syntax for --snr):

    python scripts/make_synthetic.py --out DIR --n-stories 1 --space nullsphere --n-vertices 200 \\
        --snr.language-stg 0 --snr.frontal-ifg 0 --snr.parietal-angular 0 \\
        --snr.mtl-hippocampus 0 --snr.mtl-parahippocampal 0 --snr.visual-control 0 --noise-ar1 0.8

(with the real pieman metadata instead: --from-metadata ../shared/narratives --stories pieman).
"""
from __future__ import annotations

from pathlib import Path

from assocjax.data.synthetic import DEFAULT_SNR, SyntheticConfig, make_synthetic

NULL_SPACE = "nullsphere"  # not a real mesh: the pipeline draws no surface figure for it
NULL_SNR_ARGS = tuple(a for name in DEFAULT_SNR for a in (f"--snr.{name.replace('_', '-')}", "0"))


def make_null_dataset(folder: Path, rho: float = 0.8, n_subjects: int = 6, n_vertices: int = 200,
                      story_trs: int = 300, seed: int = 0, **overrides) -> tuple[Path, dict]:
    """(root, manifest) of a one-story dataset under folder/narratives with no signal and AR(1)
    noise of lag-1 autocorrelation rho (unit variance: with SNR 0 the noise_sd is 1).

    n_vertices per hemisphere (10 % of them medial wall). The vocabulary is the generator's
    default (200 pseudo-words of seed 0), the one the built-in model's tokenizer knows; any BPE
    tokenizer reads it too. overrides: further SyntheticConfig fields (e.g. from_metadata and
    stories=("pieman",) for the real story and listeners).
    """
    cfg = SyntheticConfig(out=Path(folder) / "narratives", n_stories=1, n_subjects=n_subjects, story_trs=story_trs,
                          space=NULL_SPACE, n_vertices=n_vertices, snr={name: 0.0 for name in DEFAULT_SNR},
                          noise_ar1=rho, seed=seed, **overrides)
    return cfg.out, make_synthetic(cfg)


def make_drifting_model(folder: Path, seed: int = 0) -> Path:
    """A one-block GPT-2 (word-level tokenizer over the generator's vocabulary, 2048 positions)
    whose hidden states drift slowly over a story: its position embeddings are a random walk
    and its word embeddings are small. Slow features + AR(1) noise is the case where training
    rows next to a held-out chunk leak into its score (the old pipeline reported r = 0.023,
    95 % CI 0.011..0.039, and a ceiling of 0.34 on pure noise with it)."""
    import json

    import jax
    import numpy as np
    from flax import nnx
    from safetensors.numpy import save_file

    from assocjax.data.synthetic import pseudo_words
    from assocjax.models import CausalLM, from_hf
    from assocjax.models.params import params_to_hf
    from assocjax.pipeline.assets import save_tokenizer

    folder = Path(folder)
    save_tokenizer(pseudo_words(200, np.random.default_rng([0, 0])), folder)  # the generator's vocabulary stream
    hf = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=32, n_layer=1, n_head=4, n_positions=2048,
              vocab_size=202, layer_norm_epsilon=1e-5, activation_function="gelu_new", tie_word_embeddings=True,
              bos_token_id=1, eos_token_id=1)
    cfg = from_hf(hf)
    params = jax.tree.map(np.asarray, CausalLM(cfg, rngs=nnx.Rngs(seed)).param_tree())
    rng = np.random.default_rng(seed)
    params["wte"] = rng.normal(0, 0.05, params["wte"].shape).astype(np.float32)
    walk = np.cumsum(rng.normal(0, 1, params["wpe"].shape), 0)
    params["wpe"] = (walk / walk.std(0)).astype(np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in params_to_hf(cfg, params).items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(hf))
    return folder
