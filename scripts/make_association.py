"""Build the Association dataset (train/validation JSONL) from stories and augmentation files:
`python scripts/make_association.py --help`.

    python scripts/make_association.py --stories ../shared/narratives --augmentations augs/ --out data/assoc
    python scripts/make_association.py --stories ../shared/narratives --augmentations augs/ \
        --task continue --out data/control-continue          # the same passages, non-associative outputs

Bad input ends with one line on stderr and exit code 2 (--debug: the traceback).
"""
import dataclasses
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

from assocjax.augment.sentences import DEFAULT_GAP_S, story_sentence_ends
from assocjax.cli import run_cli
from assocjax.io import write_json
from assocjax.outputs import OutputFolder
from assocjax.options import at_least, between, fits_memory
from assocjax.tune import dataset


@dataclasses.dataclass
class Args:
    stories: tuple[Path, ...]        # align.csv/align.json files, stimuli/gentle folders or Narratives roots
    augmentations: tuple[Path, ...]  # augmentation JSON files or folders of them
    out: Path                        # writes train.jsonl, val.jsonl, dataset.json
    n: int = 1000                    # records (the paper's 1000); insertions are reused when fewer
    seed: int = 0
    val_fraction: float = 0.1        # share of records in validation (whole stories)
    passage_words: tuple[int, int] = (30, 80)  # min, max words of story before each anchor
    task: Literal["association", "continue", "summarise"] = "association"  # continue, summarise: controls
    gap_s: float = DEFAULT_GAP_S     # pause (s) that ends a sentence when there is no transcript.txt


def check_args(args: Args) -> None:
    """Every option in range, each error naming it, before a file is read."""
    at_least({"--n": args.n, "--passage-words (min)": args.passage_words[0]}, 1)
    at_least({"--seed": args.seed}, 0)
    if args.passage_words[0] > args.passage_words[1]:
        raise ValueError(f"--passage-words {args.passage_words[0]} {args.passage_words[1]}: min must be <= max")
    between("--val-fraction", args.val_fraction, 0, 1, lo_open=True, hi_open=True)
    between("--gap-s", args.gap_s, 0, math.inf, lo_open=True, hi_open=True)
    # every record is built in memory before the split: a dict of strings (~600 bytes) and its passage (~8 bytes a word)
    fits_memory({f"--n {args.n} records of up to --passage-words {args.passage_words[1]} words":
                 args.n * (600.0 + 8 * args.passage_words[1])})


def split_note(args: Args, train: list[dict], val: list[dict]) -> str | None:
    """Whole stories go to validation, so its share can exceed --val-fraction by far (one story
    with half the records makes it a 50/50 split): above twice the share asked (past the usual
    rounding to whole stories), say what was used and what fits."""
    n = len(train) + len(val)
    if len(val) <= 2 * args.val_fraction * n:
        return None
    counts = Counter(r["story"] for r in train + val)
    small, k = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return (f"--val-fraction {args.val_fraction} asked for {args.val_fraction * n:.0f} of {n} records; whole stories "
            f"give validation {len(val)} ({len(val) / n:.0%}: {', '.join(sorted({r['story'] for r in val}))}). "
            f"The smallest story, {small}, holds {k} ({k / n:.0%}): the smallest share one validation story can have")


def main(args: Args) -> None:
    check_args(args)
    with OutputFolder(args.out, "--out") as out:  # one run at a time; the three files appear together
        build(args, out)


def build(args: Args, out: OutputFolder) -> None:
    transcripts = dataset.load_transcripts(args.stories)
    stories = {name: list(t.words) for name, t in transcripts.items()}
    augs = dataset.load_augmentations(args.augmentations, stories)
    # sentence ends as everywhere else: transcript.txt punctuation beside the alignment, else pauses
    ends = {name: story_sentence_ends(transcripts[name], gap_s=args.gap_s) for name in augs}
    # passages quote what the language model reads: the punctuated transcript.txt when there is one
    readings = {name: transcripts[name].reading() for name in augs}
    records = dataset.build_records({s: stories[s] for s in augs}, augs, args.n, args.seed, args.passage_words,
                                    args.task, sentence_ends=ends, readings=readings)
    train, val = dataset.split_by_story(records, args.val_fraction, args.seed)
    note = split_note(args, train, val)
    if note:
        print(f"note: {note}", file=sys.stderr)
    summary = dict(args=dataclasses.asdict(args), **dataset.describe(records), n_train=len(train), n_val=len(val),
                   split_note=note,
                   train_stories=sorted({r["story"] for r in train}), val_stories=sorted({r["story"] for r in val}),
                   text_sources={name: transcripts[name].text_source for name in sorted(augs)})
    with out.staging() as stage:
        dataset.write_jsonl(train, stage / "train.jsonl")
        dataset.write_jsonl(val, stage / "val.jsonl")
        write_json(stage / "dataset.json", summary)
    print(f"{len(records)} {args.task} records ({summary['n_repeats']} reusing an insertion) from "
          f"{summary['n_stories']} stories: {len(train)} train, {len(val)} validation -> {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main, Args, description=__doc__))
