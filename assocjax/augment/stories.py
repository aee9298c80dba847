"""The story an augmentation is made for: a Gentle alignment file, or a story of a Narratives
dataset found by its alignment folder, story, audio or task name."""
from __future__ import annotations

import os
from pathlib import Path

from .. import stimuli


def load_story(align: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
               story: str | None = None) -> tuple[str, stimuli.Transcript, Path]:
    """(story name, alignment, alignment file) of `align` (the name defaults to the file's
    folder) or of story `story` of the dataset at `data_root` (`dataset_alignment`)."""
    if align is not None and data_root is not None:
        raise ValueError("give either --align or --data-root/--story, not both")
    if align is not None:
        align = Path(align)
        return story or align.resolve().parent.name, stimuli.read_alignment(align), align
    if data_root is None or not story:
        raise ValueError("name the story: --align FILE, or --data-root DIR --story NAME")
    gentle, t = dataset_alignment(data_root, story)
    return gentle, t, Path(t.source)


def dataset_alignment(data_root: str | os.PathLike, name: str) -> tuple[str, stimuli.Transcript]:
    """(alignment folder, alignment) of story `name` in a Narratives dataset: an alignment
    folder under stimuli/gentle, else the aligned story of the first scan (in dataset order)
    that has a story of that name, audio or alignment (`data.find_story`) or is of that task."""
    from ..data import load_dataset

    ds = load_dataset(data_root)
    gentle = name if name in ds.gentle_stories else _scan_alignment(ds, name)
    if gentle is None:
        raise ValueError(f"{data_root}: no alignment for story {name!r}; alignments: "
                         f"{', '.join(ds.gentle_stories) or 'none'}")
    return gentle, stimuli.story_alignment(ds.gentle_dir, gentle)


def _scan_alignment(ds, name: str) -> str | None:
    from ..data import find_story

    for scan in ds.all_scans:
        aligned = [st for st in scan.stories if st.gentle]
        # a task name stands for its scan's first aligned story
        hit = aligned[0] if aligned and scan.task == name else find_story(aligned, name)
        if hit is not None:
            return hit.gentle
    return None
