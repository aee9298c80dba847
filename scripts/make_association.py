"""Build the Association dataset (train/validation JSONL) from stories and augmentation files:
`python scripts/make_association.py --help`.

    python scripts/make_association.py --stories ../shared/narratives --augmentations augs/ --out data/assoc
    python scripts/make_association.py --stories ../shared/narratives --augmentations augs/ \
        --task continue --out data/control-continue          # the same passages, non-associative outputs

Bad input ends with one line on stderr and exit code 2 (--debug: the traceback).
"""
import dataclasses
import sys
from pathlib import Path
from typing import Literal

from assocjax.augment.sentences import DEFAULT_GAP_S, story_sentence_ends
from assocjax.cli import run_cli
from assocjax.io import write_json
from assocjax.outputs import OutputFolder
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


def main(args: Args) -> None:
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
    summary = dict(args=dataclasses.asdict(args), **dataset.describe(records), n_train=len(train), n_val=len(val),
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
