"""A readable summary of an augmentation file (`scripts/augment.py show`)."""
from __future__ import annotations

from typing import Sequence

from .format import Augmentation
from .random_control import token_count


def summary_text(aug: Augmentation, path, words: Sequence[str] | None = None, n: int = 5, context: int = 6,
                 tokenizer=None) -> str:
    """Story, counts per level/source, inserted words (and tokens with a tokenizer), provenance,
    and the first `n` insertions, in `context` heard words on each side when `words` are given."""
    counts: dict[tuple[str, str], int] = {}
    for ins in aug.insertions:
        counts[ins.level, ins.source] = counts.get((ins.level, ins.source), 0) + 1
    lines = [f"file: {path} (id {aug.id})",
             f"story: {aug.story} ({aug.n_words} words, story_hash {aug.story_hash[:12]}...)"
             + (", matches the given alignment" if words is not None else ""),
             f"insertions: {len(aug.insertions)} (" + ", ".join(f"{lv}/{src}: {c}" for (lv, src), c in
                                                           sorted(counts.items())) + ")",
             f"inserted words: {aug.n_inserted_words} ({100 * aug.n_inserted_words / aug.n_words:.1f}% of "
             f"{aug.n_words} heard words)"]
    if tokenizer is not None:
        n_tok = sum(token_count(tokenizer, ins.text) for ins in aug.insertions)
        lines.append(f"inserted tokens: {n_tok} ({getattr(tokenizer, 'name_or_path', '')})")
    gen = aug.provenance.get("generator")
    lines.append("provenance: " + ", ".join(f"{k}={v}" for k, v in aug.provenance.items()
                                            if k not in ("prompt_template", "generator"))
                 + (f", generator={gen}" if gen is not None else ""))
    lines.append(f"first {min(n, len(aug.insertions))} insertions:")
    for k, ins in enumerate(aug.insertions[:n]):
        if words is None:
            lines.append(f"  {k}: word {ins.anchor}: {ins.after_word or '?'} [{ins.text}]")
            continue
        before = words[max(0, ins.anchor + 1 - context): ins.anchor + 1]
        after = words[ins.anchor + 1: ins.anchor + 1 + context]
        lines.append(f"  {k}: word {ins.anchor}: {'... ' if ins.anchor + 1 > context else ''}{' '.join(before)} "
                     f"[{ins.text}] {' '.join(after)}{' ...' if ins.anchor + 1 + context < len(words) else ''}")
    return "\n".join(lines)
