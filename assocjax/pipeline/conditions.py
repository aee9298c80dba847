"""Listener conditions as fit groups (`--data.pool-conditions` pools them).

Some Narratives stories were heard by listeners split into conditions, the `condition` column
of participants.tsv (`Scan.condition`): prettymouth's were told different back-stories
(affair / paranoia) before the same story, merlin's and sherlock's had or had not watched the
movie, notthefallintact's heard it alone or after a scrambled version. (The shapes tasks'
conditions are six counterbalanced task orders, not a manipulation: `COUNTERBALANCED`, one
group.) Their responses to the same words differ by design, so by default each
condition is a fit group of its own: its own design fit, its own split-half ceiling, its own
rows (story "prettymouth.affair", "prettymouth.paranoia"). A story whose listeners share one
condition (milkyway's: its conditions are different recordings, so different stories
already, milkywayoriginal / milkywayvodka / milkywaysynonyms) is not split. Pooled stories
(`--data.pool-stories`) split the same way, by each listener's conditions in the pooled stories
whose listeners differ ("+"-joined).

A story is still one story for everything that generalises over stories: each listener is in
one condition only, so the conditions of a story merge into one column before the two-level
statistics (`by_story`: stories, then subjects), the leave-one-story-out columns name the
story, and a run of one split story keeps the subject-level CI of one story.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# stories whose `condition` is the order in which a listener did several tasks (counterbalancing:
# shapesphysical / shapessocial came in six orders of 8-12 listeners each), not a manipulation of
# what they knew before the story: one fit group, as a researcher averages over orders by design
COUNTERBALANCED = frozenset({"shapesphysical", "shapessocial"})
NO_CONDITION = "none"   # the label of listeners participants.tsv gives no condition ("n/a"), beside others that have one


def listener_condition(sel, subject: str) -> str:
    """One listener's condition label in a fit group: its condition in each of the group's
    stories whose listeners differ in condition, joined by '+' ("" when none differ)."""
    return "+".join(_condition(sel, subject, s.name) for s in sel.stories if _varies(sel, s.name))


def _condition(sel, subject: str, story: str) -> str:
    return sel.scans[(subject, story)][0].condition or NO_CONDITION


def _varies(sel, story: str) -> bool:
    if story in COUNTERBALANCED:
        return False
    return len({_condition(sel, sub, story) for sub in sel.subjects}) > 1


def split(group) -> list:
    """A fit group (`Selection`) as one group per listener condition (module docstring), or
    [group] when its listeners share one condition or conditions are pooled."""
    if group.pool_conditions or group.condition is not None:
        return [group]
    by_label: dict[str, list[str]] = {}
    for sub in group.subjects:
        by_label.setdefault(listener_condition(group, sub), []).append(sub)
    if len(by_label) < 2:
        return [group]
    return [_restricted(group, tuple(subs), label) for label, subs in sorted(by_label.items())]


def _restricted(group, subjects: tuple[str, ...], label: str):
    names = {s.name for s in group.stories}
    return dataclasses.replace(group, subjects=subjects, condition=label,
                               scans={k: v for k, v in group.scans.items() if k[0] in subjects},
                               listeners={n: tuple(s for s in group.listeners.get(n, ()) if s in subjects)
                                          for n in names})


def by_story(values_SXG: np.ndarray, weights_G, story_G) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(values_SXK, weights_K, the K stories in first-seen order): the fit groups of one story
    (its conditions) merged into one column, each subject's value that of the one group of the
    story it is in; a story's weight is its groups' (one stimulus, one trim: the same TRs).
    Without conditions the values come back as they are."""
    v = np.asarray(values_SXG)
    w = np.asarray(weights_G, np.float64)
    names = list(dict.fromkeys(story_G))
    if len(names) == len(story_G):
        return v, w, names
    out = np.full(v.shape[:-1] + (len(names),), np.nan)
    for k, name in enumerate(names):
        idx = [g for g, s in enumerate(story_G) if s == name]
        finite = np.isfinite(v[..., idx])
        if (finite.sum(-1) > 1).any():
            raise ValueError(f"story {name!r}: a subject has scores in several of its condition groups; a listener "
                             "is in one condition of a story only")
        out[..., k] = np.where(finite.any(-1), np.where(finite, v[..., idx], 0.0).sum(-1), np.nan)
    return out, np.array([w[story_G.index(n)] for n in names]), names


def story_weights(weights_G, story_G) -> np.ndarray:
    """Each group's weight shared among its story's condition groups, for fits that pool
    listeners' responses per group (the subject-mean fit, the maps): a story split into
    conditions counts once there, as the mean of its conditions, not once per condition. (A
    subject's own fits keep the full weights: each listener is in one condition only.)"""
    w = np.asarray(weights_G, np.float64)
    story = list(story_G)
    return w / np.array([story.count(s) for s in story], np.float64)


def several_stories(values_SXG: np.ndarray, weights_G, story_G) -> tuple[np.ndarray, np.ndarray] | None:
    """`by_story`'s (values, weights) when there are at least two stories (then the statistics are
    two-level), else None (one story, split by condition or not: the subject-level statistics)."""
    v, w, names = by_story(values_SXG, weights_G, list(story_G))
    return (v, w) if len(names) > 1 else None
