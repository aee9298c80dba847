"""The probe's shared inputs, built once into a work folder and copied by the cases that damage them.

- `pieman/`: a 3-subject pieman dataset from the real Narratives metadata (../shared/narratives),
  BOLD from the synthetic writer on a 60-vertex-per-hemisphere sphere (as tests/test_stories.py);
- `model/`: a 2-block random GPT-2 saved with transformers, with the real GPT-2 BPE files;
- `aug.json`: an augmentation of pieman (import of a few manual insertions);
- `train.jsonl`, `val.jsonl`: a tiny Association dataset of pieman (make_association.py);
- `baseline/`: a clean score.py run of pieman (the reference the damage cases compare to);
- `tuned/`: a finished 4-step LoRA run (finetune.py) that the resume cases continue.

Everything is built with the library itself, so a build failure on some branch shows up as
an error here, before any case runs.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _shared() -> Path:
    """../shared beside the repository; in a git worktree, beside the main checkout."""
    import subprocess

    near = REPO.parent / "shared"
    if near.is_dir():
        return near
    common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=REPO, capture_output=True, text=True)
    return (REPO / common.stdout.strip()).resolve().parent.parent / "shared" if common.returncode == 0 else near


SHARED = _shared()
NARRATIVES = SHARED / "narratives"
TOKENIZER = SHARED / "tokenizers" / "gpt2"
SPACE = "tinysphere"  # not a real mesh: no surface figure is drawn
N_VERTICES = 60
READY = "ready.json"

# score.py options every case on the pieman dataset shares (small and quick)
SCORE_FAST = ["--data.space", SPACE, "--features.context", "128", "--report.no-figures",
              "--report.n-boot", "100", "--ceiling.n-splits", "20", "--no-progress"]
# finetune.py options of a tiny run
TUNE_FAST = ["--schedule.total-steps", "4", "--schedule.warmup-steps", "1", "--data.batch-size", "2",
             "--data.max-len", "96", "--data.eval-every", "0", "--save-every", "2", "--no-progress"]


def score_argv(work: Path, root: Path | None = None, output: Path | None = None, cache: Path | None = None,
               model: Path | None = None) -> list[str]:
    """score.py on the pieman fixture (or a damaged copy `root`), into `output`, with its own cache."""
    return ["--data.root", str(root or work / "pieman"), "--model.path", str(model or work / "model"),
            "--output", str(output or "out"), "--cache-dir", str(cache or "cache"), *SCORE_FAST]


def tune_argv(work: Path, out: Path | str = "tuned") -> list[str]:
    return ["--model", str(work / "model"), "--train", str(work / "train.jsonl"), "--val", str(work / "val.jsonl"),
            "--out", str(out), *TUNE_FAST]


def build(work: Path, log=print) -> Path:
    """Build every fixture into `work` (skipped when `work/ready.json` says it is complete)."""
    work.mkdir(parents=True, exist_ok=True)
    if (work / READY).is_file():
        return work
    if not NARRATIVES.is_dir() or not TOKENIZER.is_dir():
        raise FileNotFoundError(f"the probe needs the real metadata and tokenizer under {SHARED}")
    from assocjax.data.synthetic import SyntheticConfig, make_synthetic

    log("fixture: pieman dataset")
    shutil.rmtree(work / "pieman", ignore_errors=True)
    make_synthetic(SyntheticConfig(out=work / "pieman", from_metadata=NARRATIVES, stories=("pieman",), n_subjects=3,
                                   space=SPACE, n_vertices=N_VERTICES, feature_dim=4))
    log("fixture: tiny GPT-2")
    save_gpt2(work / "model")
    log("fixture: augmentation, association data")
    _augmentation(work)
    _association(work)
    log("fixture: clean baseline score run")
    _script("score.py", score_argv(work, output=work / "baseline", cache=work / "baseline-cache"), work)
    log("fixture: finished tuning run")
    _script("finetune.py", tune_argv(work, work / "tuned"), work)
    (work / READY).write_text(json.dumps({"repo": str(REPO)}))
    return work


def save_gpt2(folder: Path, **overrides) -> Path:
    """A 2-block random GPT-2 (as tests/conftest.py::save_tiny) that reads English through the real BPE."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    cfg = GPT2Config(**{**dict(n_embd=16, n_layer=2, n_head=2, vocab_size=50257, n_positions=256, bos_token_id=50256,
                                 eos_token_id=50256), **overrides})
    AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / name, folder / name)
    return folder


def align_csv(work: Path) -> Path:
    return work / "pieman" / "stimuli" / "gentle" / "pieman" / "align.csv"


def _augmentation(work: Path) -> None:
    from assocjax.stimuli import story_alignment

    words = story_alignment(align_csv(work).parent.parent, "pieman").words
    picks = range(10, len(words) - 1, max(1, len(words) // 40))
    inline = " ".join(f"{w} [memory, river]" if i in picks else w for i, w in enumerate(words))
    (work / "notes.txt").write_text(inline)
    _script("augment.py", ["import", str(work / "notes.txt"), "--align", str(align_csv(work)), "--out",
                           str(work / "aug.json")], work)


def _association(work: Path) -> None:
    _script("make_association.py", ["--stories", str(align_csv(work)), str(_second_story(work)), "--augmentations",
                                    str(work / "aug.json"), str(work / "aug2.json"), "--out", str(work / "assoc"),
                                    "--n", "24"], work)
    for split in ("train", "val"):
        shutil.copy(work / "assoc" / f"{split}.jsonl", work / f"{split}.jsonl")


def _second_story(work: Path) -> Path:
    """A second story, 'other': pieman's words in reverse order at pieman's times (another text of the
    same length), so that train and validation split by story and random controls have a pool."""
    rows = [line.split(",") for line in align_csv(work).read_text().splitlines()]
    words = [r[:2] for r in rows][::-1]
    folder = work / "other"
    folder.mkdir(exist_ok=True)
    (folder / "align.csv").write_text("\n".join(",".join(w + r[2:]) for w, r in zip(words, rows)) + "\n")
    from assocjax.stimuli import story_alignment

    words = story_alignment(folder.parent, "other").words
    picks = range(12, len(words) - 1, max(1, len(words) // 40))
    (work / "notes2.txt").write_text(" ".join(f"{w} [stone, garden]" if i in picks else w
                                              for i, w in enumerate(words)))
    _script("augment.py", ["import", str(work / "notes2.txt"), "--align", str(folder / "align.csv"), "--out",
                           str(work / "aug2.json")], work)
    return folder / "align.csv"


def _script(name: str, argv: list[str], cwd: Path) -> None:
    """Run one script in this process (as the harness does); a failure stops the build."""
    from harness import run_script

    res = run_script(name, argv, cwd)
    if res["exit"] != 0:
        raise RuntimeError(f"fixture step {name} {' '.join(argv)} failed (exit {res['exit']}):\n{res['stderr'][-3000:]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    build(Path(sys.argv[1]))
