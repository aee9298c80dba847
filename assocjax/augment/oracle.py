"""The true augmentation of a synthetic dataset: every heard word followed by the associates
whose features drive its "MTL" parcels (`associations.json`, see `assocjax.data.synthetic`).

It is the ground truth an augmentation method is measured against: with it, F must be
positive in the MTL parcels and near zero or below elsewhere (below where the model's features
of the heard words change with the inserted words, as the built-in model's do), and a
length-matched random control (`random_control.random_match`) must not give a gain anywhere.
The built-in dataset's MTL parcels were planted from exactly these augmentations read in
context; its manifest records their ids, which `write_oracle` checks.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data.synthetic import normalize_word
from ..fingerprint import text_digest
from ..stimuli import read_gentle_csv
from .format import Augmentation, Insertion, save, story_hash
from .random_control import KINDS, control_draws, draw_path, random_match, shuffled_control

CONDITION = "oracle"


# The built-in world's pseudo-words have no part of speech; this rule gives each one a class so that
# `augment.py tag --tagger synthetic` and the per-class subsets (`augment.pos`) can run on it. The planted
# signal does not depend on it: every associate drives MTL alike, so each class carries its share.
SYNTHETIC_CLASSES = ("NOUN", "VERB", "ADJ")


def synthetic_pos(word: str) -> str:
    """A deterministic stand-in part of speech of a synthetic word: one of SYNTHETIC_CLASSES, by
    the sha256 of its normalized spelling (about a third each)."""
    return SYNTHETIC_CLASSES[int(text_digest(normalize_word(word), 8), 16) % len(SYNTHETIC_CLASSES)]


def oracle_augmentation(words, associations: dict[str, list[str]], story: str) -> Augmentation:
    missing = sorted({w for w in words if normalize_word(w) not in associations})
    if missing:
        raise ValueError(f"story {story!r}: words without associates in associations.json: {missing[:5]}")
    ins = tuple(Insertion(i, " ".join(associations[normalize_word(w)]), "word", "manual") for i, w in enumerate(words))
    return Augmentation(story, story_hash(words), len(words), ins,
                        dict(condition=CONDITION, generator="synthetic associations.json"))


def synthetic_oracle(root: str | Path) -> dict[str, tuple[list[str], Augmentation]]:
    """story -> (its words, its true augmentation) for every alignment of a synthetic dataset."""
    root = Path(root)
    table = root / "associations.json"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: {root} is not a synthetic dataset (assocjax.data.synthetic)")
    associations = json.loads(table.read_text())
    out = {}
    for align in sorted((root / "stimuli" / "gentle").glob("*/align.csv")):
        words = list(read_gentle_csv(align, on_unsorted="sort").words)
        out[align.parent.name] = (words, oracle_augmentation(words, associations, align.parent.name))
    if not out:
        raise FileNotFoundError(f"no stimuli/gentle/*/align.csv under {root}")
    return out


def write_oracle(root: str | Path, out_dir: str | Path, seed: int = 0, controls: bool = True,
                 tokenizer=None, draws: int = 1, kinds: tuple[str, ...] = ("other-story",)) -> dict[str, list[Path]]:
    """story -> files written: <story>_oracle.json for every story of the synthetic dataset at
    `root` and, with controls, its random controls of each of `kinds` (`random_control.KINDS`):
    other-story, the length-matched <story>_random.json (content: the other stories' words;
    lengths in `tokenizer`'s tokens when given); shuffled, <story>_shuffled.json (the oracle's
    own associates moved to other words). Seeds `seed`, ..., `seed + draws - 1`: with `draws` > 1
    each control is a distribution of draws, <story>_random-drawNN.json
    (`random_control.control_draws`). A dataset whose manifest records the oracle it was
    planted with (the built-in one: `assocjax.pipeline.assets`) must give exactly those augmentations."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"write_oracle: control kinds must be some of {KINDS}, got {kinds!r}")
    stories = synthetic_oracle(root)
    if controls and "other-story" in kinds and len(stories) < 2:
        raise ValueError(f"{root} has one story ({', '.join(stories)}): a random control draws its words from the "
                         "other stories; write the oracle alone (augment.py oracle --no-controls)")
    _check_recorded(Path(root), {story: aug.id for story, (_, aug) in stories.items()})
    written = {}
    for story, (words, aug) in stories.items():
        written[story] = [save(aug, Path(out_dir) / f"{story}_oracle.json", words)]
        if not controls:
            continue
        pool = [w for other, (ws, _) in stories.items() if other != story for w in ws]
        make = {"other-story": (lambda s: random_match(aug, words, pool, s, "matched", tokenizer,
                                                       pool_name="other stories"), "random"),
                "shuffled": (lambda s: shuffled_control(aug, words, s), "shuffled")}
        for kind in kinds:
            fn, name = make[kind]
            for d, control in enumerate(control_draws(fn, seed, draws)):
                written[story].append(save(control, draw_path(Path(out_dir) / f"{story}_{name}.json", d, draws),
                                           words))
    return written


def _check_recorded(root: Path, ids: dict[str, str]) -> None:
    manifest = root / "manifest.json"
    recorded = json.loads(manifest.read_text()).get("oracle", {}).get("ids") if manifest.is_file() else None
    if recorded is not None and recorded != ids:
        raise ValueError(f"{manifest} records oracle augmentations {recorded}, but its associations.json and "
                         f"alignments give {ids}: the dataset was changed after it was planted")
