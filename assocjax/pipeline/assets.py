"""The built-in default: a random GPT-2-style model, a word-level tokenizer over the synthetic
vocabulary, and a synthetic Narratives dataset whose BOLD is planted from one layer of that
model. Everything is made offline (no torch, no downloads), saved the way real assets are
(Hugging Face folder, BIDS folder), and cached under a hash of the options, so the default
run goes through exactly the loaders a real run uses.

The built-in brain has associative memory in the sense the paper tests: its MTL parcels
respond to the model's features of each story as heard *with its associations* (80 % of
their signal variance by default: `SyntheticOptions.assoc_share`), i.e. the features `score.py --augment.files
<story>_oracle.json` computes in the default context mode, and every other parcel to the
plain story. The oracle augmentations are written at build time (`oracle/<story>_oracle.json`)
and recorded in the manifest ("oracle": parcels, layer, files and augmentation ids), and the
planted reading is checked to be exactly theirs.

The world is a cached folder (`CACHE`, keyed by the options): built in a temporary folder,
stamped (`cachefile.FOLDER_STAMP`: the key and every file's size and sha256) and renamed into
place, and checked at every use; a damaged world (a file edited, truncated, removed or added)
is rebuilt with a warning (`cachefile`'s one policy).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from .. import cachefile
from ..augment.format import augmented_words
from ..augment.oracle import CONDITION, synthetic_oracle, write_oracle
from ..data.synthetic import make_synthetic, pseudo_words
from ..data.synthetic.model import read_with_associates
from ..features import cache as feature_cache, word_features
from ..fingerprint import weights_id
from ..io import atomic_write_text, write_json
from ..models import CausalLM, from_hf, load_pretrained
from ..models.params import WEIGHT_ROLES, param_roles, params_to_hf
from .config import SyntheticOptions

# bump the version when what is built for the same options changes (2: words at their midpoints; 3: MTL planted
# from the story read with its oracle augmentation, 12 subjects, oracle files recorded)
CACHE = cachefile.Kind("builtin", version=3, what="built-in world")
VOCAB_SIZE = 200
UNK, EOS = "[UNK]", "[EOS]"
# The generator draws its vocabulary from numpy stream [seed, 0] (manifest: seed_streams
# "vocab=0"); the tokenizer must be built before the data, whose BOLD needs the model.
_VOCAB_STREAM = 0


@dataclasses.dataclass(frozen=True)
class Builtin:
    root: Path
    model: Path
    oracle: Path  # <story>_oracle.json: the augmentations the MTL parcels were planted with
    space: str
    manifest: dict


def planting(opts: SyntheticOptions) -> dict:
    """The feature settings the BOLD was planted with (the pipeline's defaults for this model)."""
    return dict(layer=opts.planted_layer, context=opts.positions, stride=opts.positions // 2, pooling="last")


def ensure_builtin(opts: SyntheticOptions, cache_dir: Path, progress: bool = True) -> Builtin:
    """The cached built-in assets for these options, made first if missing."""
    opts.check()
    key = CACHE.key(options=dataclasses.asdict(opts))
    final = CACHE.entry(CACHE.under(cache_dir), key)
    if not CACHE.folder_usable(final, key):  # every file hashed: cheap beside a run, which reads them
        with CACHE.building(final, key) as tmp:
            _build(opts, tmp, feature_cache.CACHE.under(cache_dir), progress)
    manifest = json.loads((final / "narratives" / "manifest.json").read_text())
    return Builtin(final / "narratives", final / "model", final / "oracle", opts.space, manifest)


def _build(opts: SyntheticOptions, out: Path, feature_cache: Path, progress: bool) -> None:
    vocab = pseudo_words(VOCAB_SIZE, np.random.default_rng([opts.seed, _VOCAB_STREAM]))
    save_tokenizer(vocab, out / "model")
    save_random_gpt2(opts, VOCAB_SIZE + 2, out / "model")
    model, tok = load_pretrained(out / "model")
    plant = planting(opts)
    known = set(vocab)
    model_id = weights_id(model)  # once, not per story

    def layer_features(words):
        unknown = sorted({w.lower() for w in words} - known)
        if unknown:  # the generator's vocabulary stream moved: the tokenizer would read [UNK]
            raise RuntimeError(f"synthetic words missing from the built-in tokenizer: {unknown[:5]}")
        return word_features(model, tok, list(words), plant["context"], plant["stride"], plant["pooling"],
                             cache_dir=feature_cache, weights_id=model_id)[plant["layer"]]

    layer_features.__name__ = f"builtin GPT-2 hidden state {opts.planted_layer}"
    cfg = opts.generator_config(out / "narratives", vocab_size=VOCAB_SIZE, assoc_mode="context")
    manifest = make_synthetic(cfg, features=layer_features, progress=progress)
    manifest["oracle"] = _record_oracle(cfg.out, out / "oracle", manifest, plant)
    write_json(cfg.out / "manifest.json", manifest)


def _record_oracle(root: Path, folder: Path, manifest: dict, plant: dict) -> dict:
    """Write each story's oracle augmentation into `folder` and return the manifest's record of
    what the MTL parcels were planted from. The generator read every story with each word's
    associates after it (`read_with_associates`); that must be exactly the oracle file's reading,
    or score.py's oracle condition would measure other features than the planted ones."""
    associations = json.loads((root / "associations.json").read_text())
    written = write_oracle(root, folder, controls=False)
    files, ids = {}, {}
    for story, (words, aug) in synthetic_oracle(root).items():
        path = written[story][0]
        planted = read_with_associates(words, associations)
        read, heard, _ = augmented_words(words, aug)
        if read != planted[0] or not np.array_equal(np.flatnonzero(heard >= 0), planted[1]):
            raise RuntimeError(f"story {story!r}: the oracle augmentation's reading differs from the planted one")
        files[story], ids[story] = str(path.relative_to(folder.parent)), aug.id
    mtl = [p for p, v in manifest["parcels"].items() if v["mtl"]]
    return dict(condition=CONDITION, augment_mode="context", parcels=mtl, share=manifest["assoc_share"], **plant,
                files=files, ids=ids,
                note="MTL parcels: sqrt(1 - share) x the plain story's features + sqrt(share) x the features of the "
                     "heard words of the story read with its oracle augmentation (score.py --augment.files "
                     "<these files>, --augment.mode context); every other parcel: the plain story's")


def save_tokenizer(vocab: list[str], folder: Path):
    """A word-level fast tokenizer (lower-cased, whitespace-split) over `vocab`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {UNK: 0, EOS: 1, **{w: i + 2 for i, w in enumerate(vocab)}}
    backend = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()  # sentence-initial capitals are the same word
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, eos_token=EOS)
    tok.save_pretrained(str(folder))
    return tok


def save_random_gpt2(opts: SyntheticOptions, vocab_size: int, folder: Path) -> None:
    """config.json + model.safetensors of a random GPT-2 whose weight matrices have std
    `opts.init_std`, large enough that each block changes the residual stream visibly."""
    from safetensors.numpy import save_file

    hf = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=opts.hidden, n_layer=opts.n_layers,
              n_head=opts.n_heads, n_positions=opts.positions, vocab_size=vocab_size, layer_norm_epsilon=1e-5,
              activation_function="gelu_new", tie_word_embeddings=True, bos_token_id=1, eos_token_id=1)
    cfg = from_hf(hf)
    params = CausalLM(cfg, rngs=nnx.Rngs(opts.seed)).param_tree()
    roles = param_roles(cfg)

    def rescale(path, a):
        a = np.asarray(a, np.float32)
        if roles[path[-1].key] not in WEIGHT_ROLES:  # norms and biases keep their init
            return a
        scale = opts.init_std * (opts.position_scale if path[-1].key == "wpe" else 1.0)
        return np.ascontiguousarray(a / a.std() * scale)

    params = jax.tree_util.tree_map_with_path(rescale, params)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in params_to_hf(cfg, params).items()},
              str(folder / "model.safetensors"))
    atomic_write_text(folder / "config.json", json.dumps(hf, indent=2))
