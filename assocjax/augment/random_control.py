"""The random controls of an associative augmentation (`KINDS`).

"other-story" (`random_match`): same number of insertions, each as long as the one it
replaces (in tokens of the model's tokenizer when given, else in whitespace words), its
content a contiguous run of words from unrelated text (`pool`, e.g. other stories' words) at
a seeded random start; positions the same anchors ("matched") or seeded random ones
("random").

"shuffled" (`shuffled_control`): the same insertion texts over the same anchors, permuted
(within each level) so that no text stays where it was: same words, same form (a comma list
stays a comma list), wrong place. Association vs this control is then not also comma lists
vs prose.

The same seed gives the same control. Host-side NumPy: this runs once per augmentation.

Draws (`control_draws`): K seeded draws of one control (seeds seed, seed + 1, ...), one
augmentation each, so that `score.py --augment.compare` can score each as an ordinary
condition and compare the association with their distribution (`assocjax.pipeline.draws`).
Each draw's provenance records `control` (the control's condition, e.g. random-word), `draw`
(0..K-1), `draws` (K) and its own `condition` <control>-draw<NN>; one draw (K = 1) is the
control as before, without those fields.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..stimuli import read_alignment
from .format import Augmentation, Insertion, story_hash, validate

POSITIONS = ("matched", "random")
KINDS = ("other-story", "shuffled")
MAX_STARTS = 2000  # random starts tried per insertion before giving up on an exact token count


def token_count(tokenizer, text: str) -> int:
    """Tokens of `text` as it appears inside the augmented story: after a space."""
    return len(tokenizer(" " + text, add_special_tokens=False)["input_ids"])


def pool_from_alignments(paths: Sequence[str | os.PathLike], words: Sequence[str], story: str) -> list[str]:
    """The words of other stories' alignments, in order: the content of a random control for
    `story` (its `words`). An alignment of the story itself is an error: the pool must be
    unrelated text."""
    own, pool = story_hash(words), []
    for path in paths:
        other = read_alignment(path).words
        if story_hash(other) == own:
            raise ValueError(f"--pool-align {path} is the story {story!r} itself; the pool must be unrelated text")
        pool.extend(other)
    if not pool:
        raise ValueError("give --pool-align with at least one other story's alignment")
    return pool


def _run(pool: Sequence[str], start: int, length: int) -> str:
    return " ".join(pool[start:start + length])


def _tokenizer_name(tokenizer) -> str | None:
    """A portable name (no local folders in provenance): "gpt2" for a hub id or a folder."""
    if tokenizer is None:
        return None
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _check_pool(pool: Sequence[str]) -> list[str]:
    pool = list(pool)
    if not pool:
        raise ValueError("random_match: the pool of unrelated words is empty")
    for k, w in enumerate(pool):
        if not isinstance(w, str) or not w.strip() or len(w.split()) != 1 or "[" in w or "]" in w:
            raise ValueError(f"random_match: pool word {k} is {w!r}; pool entries must be single words "
                             "without whitespace or brackets")
    return pool


def _pick_words(pool: list[str], n: int, rng: np.random.Generator) -> str:
    return _run(pool, int(rng.integers(0, len(pool) - n + 1)), n)


def _pick_tokens(pool: list[str], target: int, rng: np.random.Generator, count: Callable[[str], int], i: int) -> str:
    # Each word adds at least one token, so runs longer than `target` words cannot match;
    # token counts grow with run length, so stop a start as soon as it overshoots.
    for start in rng.integers(0, len(pool), size=MAX_STARTS):
        for length in range(1, min(target, len(pool) - int(start)) + 1):
            c = count(_run(pool, int(start), length))
            if c == target:
                return _run(pool, int(start), length)
            if c > target:
                break
    raise ValueError(f"random_match: no run of pool words has exactly {target} tokens (insertion {i}) "
                     f"after {MAX_STARTS} random starts; use a larger or more varied pool")


def _random_anchors(aug: Augmentation, n_words: int, sentence_ends, rng: np.random.Generator) -> list[int]:
    """One anchor per insertion, without replacement; sentence-level insertions only at
    sentence ends when those are given."""
    anchors = [0] * len(aug.insertions)
    used: set[int] = set()
    ends = None
    if sentence_ends is not None:
        ends = np.unique(np.asarray(sentence_ends))
        if ends.size == 0 or not np.issubdtype(ends.dtype, np.integer) or ends[0] < 0 or ends[-1] >= n_words:
            raise ValueError(f"random_match: sentence_ends must be word indices in [0, {n_words}), "
                             f"got {sentence_ends!r}")
    for level in ("sentence", "word"):  # sentence-level first: they have fewer places to go
        ks = [k for k, ins in enumerate(aug.insertions) if ins.level == level]
        if not ks:
            continue
        allowed = ends if level == "sentence" and ends is not None else np.arange(n_words)
        free = np.asarray([a for a in allowed.tolist() if a not in used], np.int64)
        if free.size < len(ks):
            where = "sentence ends" if allowed is ends else "words"
            raise ValueError(f"random_match: {len(ks)} {level}-level insertions need distinct anchors but only "
                             f"{free.size} free {where} are left")
        chosen = rng.choice(free, size=len(ks), replace=False)
        for k, a in zip(ks, chosen.tolist()):
            anchors[k] = a
            used.add(a)
    return anchors


def random_match(aug: Augmentation, words: Sequence[str], pool: Sequence[str], seed: int,
                 positions: str = "matched", tokenizer=None, sentence_ends=None,
                 pool_name: str = "") -> Augmentation:
    """The random control of `aug` (see module docstring); source "random", levels copied.

    tokenizer: any Hugging Face tokenizer; lengths are then `token_count` tokens and matched
    exactly (ValueError when the pool has no run of the needed count). sentence_ends: word
    indices where sentence-level insertions may go when positions="random".
    """
    validate(aug, words, where="random_match: augmentation")
    if positions not in POSITIONS:
        raise ValueError(f"random_match: positions must be one of {POSITIONS}, got {positions!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"random_match: seed must be an int, got {seed!r}")
    pool = _check_pool(pool)
    count = (lambda text: token_count(tokenizer, text)) if tokenizer is not None else (lambda text: len(text.split()))
    targets = [count(ins.text) for ins in aug.insertions]
    available = count(" ".join(pool))
    if available < max(targets):
        unit = "tokens" if tokenizer is not None else "words"
        raise ValueError(f"random_match: the pool ({pool_name or 'unnamed'}) has {available} {unit}, shorter than "
                         f"the longest insertion ({max(targets)} {unit})")
    rng = np.random.default_rng(seed)
    if positions == "matched":
        anchors = [ins.anchor for ins in aug.insertions]
    else:
        anchors = _random_anchors(aug, len(words), sentence_ends, rng)
    texts = [_pick_tokens(pool, t, rng, count, i) if tokenizer is not None else _pick_words(pool, t, rng)
             for i, t in enumerate(targets)]
    insertions = tuple(Insertion(a, text, ins.level, "random", words[a])
                       for a, text, ins in zip(anchors, texts, aug.insertions))
    provenance = {
        "generator": "random_match", "matched_to": aug.id, "seed": int(seed), "positions": positions,
        "pool_name": pool_name, "pool_words": len(pool),
        "unit": "tokens" if tokenizer is not None else "words",
        "tokenizer": _tokenizer_name(tokenizer),
        "total_original": int(sum(targets)), "total_control": int(sum(count(t) for t in texts)),
    }
    out = Augmentation(aug.story, story_hash(words), len(words), insertions, provenance)
    validate(out, words, where="random_match: control")
    return out


def _derange(anchors: Sequence[int], texts: Sequence[str], rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(perm, unmoved): slot k gets texts[perm[k]]; a slot is "unmoved" when its anchor held
    that same text before. A seeded random permutation, then swaps that lower the unmoved
    count until none does; if some remain (swaps alone can get stuck when texts or anchors
    repeat), the exact minimum from an assignment problem (cost 1 per unmoved slot plus a
    seeded tie-break below 1 in total), so unmoved is 0 whenever the slots allow it."""
    _, a_k = np.unique(np.asarray(anchors), return_inverse=True)
    names, t_k = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    held_AT = np.zeros((a_k.max() + 1, len(names)), bool)
    held_AT[a_k, t_k] = True
    n = len(texts)
    perm = rng.permutation(n)

    def stays(k, j) -> bool:
        return bool(held_AT[a_k[k], t_k[j]])

    improved = True
    while improved:
        improved = False
        for k in rng.permutation(n):
            if not stays(k, perm[k]):
                continue
            for j in rng.permutation(n):  # the first swap that lowers the count
                if stays(k, perm[j]) + stays(j, perm[k]) < 1 + stays(j, perm[j]):
                    perm[k], perm[j] = perm[j], perm[k]
                    improved = True
                    break
    if any(stays(k, perm[k]) for k in range(n)):
        from scipy.optimize import linear_sum_assignment

        stays_KJ = held_AT[a_k][:, t_k]
        _, perm = linear_sum_assignment(stays_KJ + rng.random((n, n)) / (n + 1))
    return perm, int(sum(stays(k, perm[k]) for k in range(n)))


def shuffled_control(aug: Augmentation, words: Sequence[str], seed: int) -> Augmentation:
    """The shuffled control of `aug` (see module docstring): its insertion texts permuted over
    its anchors, within each level, with a seeded permutation that leaves no text at an anchor
    that held it where the insertions allow it (`provenance["unmoved"]` counts those that could
    not move, e.g. a level with one insertion). Source "random"; provenance "condition"
    shuffled-<level>, so `score.py --augment.compare` keeps it apart from the other-story control."""
    validate(aug, words, where="shuffled_control: augmentation")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"shuffled_control: seed must be an int, got {seed!r}")
    rng = np.random.default_rng(seed)
    texts = [ins.text for ins in aug.insertions]
    unmoved = 0
    for level in ("sentence", "word"):
        ks = [k for k, ins in enumerate(aug.insertions) if ins.level == level]
        if not ks:
            continue
        perm, stuck = _derange([aug.insertions[k].anchor for k in ks], [aug.insertions[k].text for k in ks], rng)
        for k, j in zip(ks, perm.tolist()):
            texts[k] = aug.insertions[ks[j]].text
        unmoved += stuck
    insertions = tuple(Insertion(ins.anchor, text, ins.level, "random", words[ins.anchor])
                       for ins, text in zip(aug.insertions, texts))
    provenance = {"generator": "shuffled_control", "kind": "shuffled", "matched_to": aug.id, "seed": int(seed),
                  "condition": f"shuffled-{aug.level}", "unmoved": int(unmoved)}
    out = Augmentation(aug.story, story_hash(words), len(words), insertions, provenance)
    validate(out, words, where="shuffled_control: control")
    return out


def control_draws(make: Callable[[int], Augmentation], seed: int, n_draws: int) -> list[Augmentation]:
    """`make(seed + d)` for d in 0..n_draws-1, each marked as draw d of its control (module
    docstring); n_draws = 1: `[make(seed)]` unmarked, the single control of before."""
    if not isinstance(n_draws, (int, np.integer)) or isinstance(n_draws, bool) or n_draws < 1:
        raise ValueError(f"control_draws: the number of draws must be an int >= 1, got {n_draws!r}")
    if n_draws == 1:
        return [make(seed)]
    out = []
    for d in range(n_draws):
        control = make(seed + d)
        # the condition `pipeline.inputs.condition_name` gives the control: every insertion is source "random"
        base = control.provenance.get("condition") or f"random-{control.level}"
        provenance = {**control.provenance, "control": base, "draw": d, "draws": int(n_draws),
                      "condition": f"{base}-{draw_label(d, n_draws)}"}
        out.append(dataclasses.replace(control, provenance=provenance))
    return out


def draw_label(draw: int, n_draws: int) -> str:
    """"draw07": the draw's suffix in condition and file names, zero-padded so that they sort."""
    return f"draw{draw:0{max(2, len(str(n_draws - 1)))}d}"


def draw_path(out: str | os.PathLike, draw: int, n_draws: int) -> Path:
    """The file of draw `draw` of `n_draws` for the output name `out`: `out` itself for one draw,
    else <stem>-drawNN<suffix> beside it (aug/pieman-random.json -> aug/pieman-random-draw03.json)."""
    out = Path(out)
    return out if n_draws == 1 else out.with_name(f"{out.stem}-{draw_label(draw, n_draws)}{out.suffix}")
