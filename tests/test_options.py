"""Every option checked: rows of (script, argv, what the error names), each run in-process
through the script's own main and `assocjax.cli.run_cli` as the command line would. A bad
value must end with exit code 2 and one line "error: ..." naming the option, before any long
work: no built-in world generated, no BOLD read, no output folder made."""
import json
from pathlib import Path

import pytest

from scripts_loader import load_script

from assocjax.augment.oracle import write_oracle
from assocjax.cli import EXIT_USER_ERROR, one_line, run_cli
from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from assocjax.pipeline import SyntheticOptions
from assocjax.pipeline.assets import save_random_gpt2, save_tokenizer

# each script's options class (`augment` parses its own subcommands: main(argv))
CONFIGS = {"score": "ScoreConfig", "demo": "DemoConfig", "make_synthetic": "SyntheticConfig",
           "make_association": "Args", "sweep": "SweepConfig", "finetune": "Args"}
# the rows marked DATA score the fixture's one-story dataset
DATA = ["--data.root", "{one_story}", "--data.space", "tinysphere", "--model.path", "{model}"]
# finetune.py's required options (the files do not exist: the options are checked first)
TUNE = ["--model", "{tmp}/m", "--train", "{tmp}/train.jsonl", "--out", "{tmp}/out"]


def script(name: str):
    return load_script(name, f"{name}_options_cli")


def call(name: str, argv: list[str]) -> int:
    module = script(name)
    if name == "augment":
        return module.main(argv)
    return run_cli(module.main, getattr(module, CONFIGS[name]), argv)


ROWS = [
    # score.py: statistics (issue 20 item 3)
    ("score", ["--compare.fdr", "2"], "--compare.fdr 2.0 must be in (0, 1)"),
    ("score", ["--compare.fdr", "nan"], "--compare.fdr nan must be in (0, 1)"),
    ("score", ["--compare.n-perm", "0"], "--compare.n-perm 0 must be >= 20"),
    ("score", ["--compare.n-perm", "9", "--compare.fdr", "0.1"], "--compare.n-perm 9 must be >= 10"),
    ("score", ["--compare.min-base", "nan"], "--compare.min-base nan must be in (0, 1]"),
    ("score", ["--compare.min-base", "-1"], "--compare.min-base -1.0 must be in (0, 1]"),
    ("score", ["--ceiling.min-ceiling", "nan"], "--ceiling.min-ceiling nan must be in (0, 1]"),
    ("score", ["--ceiling.min-ceiling", "-1"], "--ceiling.min-ceiling -1.0 must be in (0, 1]"),
    ("score", ["--compare.names", "tuned"], "--compare.names ['tuned'] labels --compare.models, which is not given"),
    ("score", ["--compare.models", "a/m", "b/m"], "--compare.names ['m', 'm'] must give one distinct label"),
    # a comparison checks its options before it reads any model
    ("score", ["--compare.models", "nomodel", "--compare.n-perm", "0"], "--compare.n-perm 0 must be >= 20"),
    ("score", ["--seed", "-1"], "--seed -1 must be >= 0"),
    ("score", ["--ridge.alphas", "10", "1e30"], "--ridge.alphas [10.0, 1e+30] must be values in (0, 9.22e+18]"),
    ("score", ["--ridge.alphas", "nan"], "--ridge.alphas [nan] must be values in (0,"),
    ("score", ["--synthetic.n-subjects", "0"], "--synthetic.n-subjects 0 must be >= 1"),
    ("score", ["--synthetic.n-vertices", "0"], "--synthetic.n-vertices 0 must be >= 1"),
    ("score", ["--synthetic.story-trs", "-5"], "--synthetic.story-trs -5 must be >= 1"),
    ("score", ["--synthetic.assoc-share", "nan"], "--synthetic.assoc-share nan must be in [0, 1]"),
    ("score", ["--synthetic.hidden", "30"], "--synthetic.hidden 30 must be a multiple of --synthetic.n-heads 4"),
    ("score", ["--synthetic.planted-layer", "9"], "--synthetic.planted-layer 9 is out of range"),
    ("score", ["--synthetic.n-stories", "1000000000"], "--synthetic.n-stories 1000000000 must be in [1, 26]"),
    ("score", ["--synthetic.n-subjects", "1000000000"], "--synthetic.n-subjects 1000000000 x --synthetic.n-stories 3"),
    ("score", ["--synthetic.positions", "1000000000"], "--synthetic.positions 1000000000 x --synthetic.hidden 32"),
    ("score", ["--synthetic.n-layers", "1000000000"], "--synthetic.n-layers 1000000000 x --synthetic.hidden 32"),
    ("score", ["--synthetic.init-std", "1e30"], "--synthetic.init-std 1e+30 must be in (0, 10000.0]: weights of a"),
    ("score", ["--synthetic.position-scale", "1e5"], "--synthetic.position-scale 100000.0 must be in [0, 33330.0]"),
    ("score", ["--ceiling.n-splits", "1000000000"], "--ceiling.n-splits 1000000000 must be in [1, 100000]"),
    ("score", ["--report.n-boot", "1000000000"], "--report.n-boot 1000000000 must be in [1, 100000]"),
    ("score", ["--memory-gb", "inf"], "--memory-gb inf must be in (0, inf)"),
    ("score", DATA + ["--ridge.outer-folds", "50"], "--ridge.outer-folds 50 must be in [2, 4]"),
    ("score", DATA + ["--ridge.buffer-trs", "1000000000"], "what fits: --ridge.buffer-trs 12"),
    # score.py on data: a buffer that leaves a fold no training rows names the options and what fits
    ("score", DATA + ["--features.delays", "1", "30"],
     "a buffer of 38 TRs (--ridge.buffer-trs; unset: max(--features.delays) + 8) around each held-out chunk "
     "(--ridge.story-chunks 4) leaves some fold no training rows of story 'storya' (54 TRs after --data.trim-start 6); "
     "what fits: --ridge.buffer-trs 12"),
    # (delays 1-4 TRs, buffer 12: the default span's 2-6 + 8 = 14 fits no chunk count of this 54-row story)
    ("score", DATA + ["--ridge.story-chunks", "40", "--features.delay-span", "1.5", "6"],
     "what fits: --ridge.buffer-trs 3 or --ridge.story-chunks 4"),
    ("score", DATA + ["--ridge.story-chunks", "200"], "--ridge.story-chunks 200 must be in 1..54"),
    ("score", DATA + ["--data.trim-start", "10000"], "--data.trim-start 10000 leaves story 'storya' (60 TRs) 0 rows, "
     "too few for --features.delays up to 6 TRs: trim at most 53"),
    # make_synthetic.py
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-vertices", "0"], "--n-vertices 0 must be >= 1"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-subjects", "0"], "--n-subjects 0 must be >= 1"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-subjects", "-2"], "--n-subjects -2 must be >= 1"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-stories", "0"], "--n-stories 0 must be >= 1"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--tr", "0"], "--tr 0.0 must be in (0, inf)"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--words-per-second", "nan"], "--words-per-second nan must be in (0, inf)"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--seed", "-1"], "--seed -1 must be >= 0"),
    # make_synthetic.py: sizes too large for memory name the options that size the largest part, before any work
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-subjects", "1000000000"], "--n-subjects 1000000000 x --n-stories 2 need about"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--story-trs", "1000000000"],
     "--n-vertices 10242 x --lead-trs + --story-trs + --tail-trs (1000000016 TRs) need about"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-vertices", "1000000000"], "--n-vertices 1000000000 x --lead-trs"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--feature-dim", "1000000000"], "--feature-dim 1000000000 x (--n-vertices"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--vocab-size", "1000000000"], "--vocab-size 1000000000 x --n-associates 3"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--tr", "1e30"], "--words-per-second 2.5 x --story-trs 300 x --tr 1e+30"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-stories", "27"], "--n-stories 27 must be in [1, 26]: generated stories"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-associates", "0"], "--n-associates 0 must be in [1, 199]"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--n-associates", "200"], "--n-associates 200 must be in [1, 199]"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--lead-trs", "0"], "--audio-onset 3.0 s + --music-seconds 6.0 s: the music "
     "event must end before the story starts (--lead-trs 0 TRs = 0.0 s); what fits: --lead-trs 6"),
    ("make_synthetic", ["--out", "{tmp}/ds", "--response", "fir", "--fir-delays", "-1"], "--fir-delays -1 must be >= 0"),
    # demo.py
    ("demo", ["--n-subjects", "1000000000"], "--n-subjects 1000000000 x --n-stories 6 x --trs-per-story 160 x --n-voxels"),
    ("demo", ["--vocab-size", "1000000000"], "--vocab-size 1000000000 x --embed-dim 24 need about"),
    ("demo", ["--embed-dim", "1000000000"], "--embed-dim 1000000000"),
    ("demo", ["--tr", "1e30"], "--tr 1e+30 (4e+32 words a story)"),
    ("demo", ["--noise", "1e30"], "--noise 1e+30 must be in [0, 1000000.0]"),
    # demo.py
    ("demo", ["--tr", "0"], "--tr 0.0 must be in (0, inf)"),
    ("demo", ["--words-per-second", "0"], "--words-per-second 0.0 must be in (0, inf)"),
    ("demo", ["--noise", "nan"], "--noise nan must be in [0, 1000000.0]"),
    ("demo", ["--noise", "-1"], "--noise -1.0 must be in [0, 1000000.0]"),
    ("demo", ["--delays", "-1", "0"], "--delays -1 must be in [1, 159]: causal, and shorter than --trs-per-story 160"),
    ("demo", ["--delays", "2", "2"], "--delays [2, 2]: give distinct FIR delays"),
    ("demo", ["--n-stories", "0"], "--n-stories 0 must be >= 3"),
    ("demo", ["--n-subjects", "1"], "--n-subjects 1 must be >= 2"),
    # make_association.py (options before any file is read: the story folders do not exist)
    ("make_association", ["--stories", "{tmp}/s", "--augmentations", "{tmp}/a", "--out", "{tmp}/data",
                          "--val-fraction", "0"], "--val-fraction 0.0 must be in (0, 1)"),
    ("make_association", ["--stories", "{tmp}/s", "--augmentations", "{tmp}/a", "--out", "{tmp}/data",
                          "--val-fraction", "1"], "--val-fraction 1.0 must be in (0, 1)"),
    ("make_association", ["--stories", "{tmp}/s", "--augmentations", "{tmp}/a", "--out", "{tmp}/data", "--n", "0"],
     "--n 0 must be >= 1"),
    ("make_association", ["--stories", "{tmp}/s", "--augmentations", "{tmp}/a", "--out", "{tmp}/data", "--n",
                          "1000000000"], "--n 1000000000 records of up to --passage-words 80 words need about"),
    ("make_association", ["--stories", "{tmp}/s", "--augmentations", "{tmp}/a", "--out", "{tmp}/data",
                          "--passage-words", "9", "3"], "--passage-words 9 3: min must be <= max"),
    # finetune.py: each group's options named by their path and flag (--optim.*, --schedule.*, --data.*, --method.*)
    ("finetune", TUNE + ["--optim.lr", "nan"], "optim.lr=nan (--optim.lr) must be a finite number in (0, 10.0]"),
    ("finetune", TUNE + ["--optim.weight-decay", "1e4"], "optim.weight_decay=10000.0 (--optim.weight-decay) must be a "
     "finite number >= 0 (0: off) and below 1 / --optim.lr = 5e+03"),
    ("finetune", TUNE + ["--schedule.total-steps", "1000000000"], "schedule.total_steps=1000000000 "
     "(--schedule.total-steps) must be an integer in 1..10_000_000"),
    ("finetune", TUNE + ["--schedule.end-lr-fraction", "2"], "schedule.end_lr_fraction=2.0 "
     "(--schedule.end-lr-fraction) must be a share of lr: 0..1"),
    ("finetune", TUNE + ["--data.accum", "0"], "data.accum=0 (--data.accum) must be an integer >= 1"),
    ("finetune", TUNE + ["--method.lora.alpha", "1e30"], "method.lora.alpha=1e+30 (--method.lora.alpha) must be a "
     "finite number in (0, 1000 * --method.lora.rank 8]"),
    ("finetune", TUNE + ["--keep", "0"], "keep=0 (--keep) must be an integer >= 1"),
    # augment.py
    ("augment", ["show", "{aug}", "--align", "{align}", "--tokenizer", "{tmp}/nope"],
     "--tokenizer {tmp}/nope: folder not found"),
    ("augment", ["random-match", "--augmentation", "{aug}", "--align", "{align}", "--pool-align", "{pool}", "--out",
                 "{tmp}/out.json", "--tokenizer", "{tmp}/nope"], "--tokenizer {tmp}/nope: folder not found"),
    ("augment", ["generate", "--align", "{align}", "--model-path", "{model}", "--out", "{tmp}/out.json",
                 "--max-new-tokens", "100000"], "--max-new-tokens 100000 must be below the 48 positions of --model-path"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--model-path", "{model}", "--out", "{tmp}/out.json",
                 "--top-p", "0"], "--top-p 0.0 must be in (0, 1]"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--every", "0"], "--every 0 must be >= 1"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--temperature", "1e30"], "--temperature 1e+30 must be in [0, 10]: above about 2"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--max-words", "1000000000"], "--max-words 1000000000 must be in [1, 32]: each word takes"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--retries", "1000000000"], "--retries 1000000000 must be in [0, 100]"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--max-retries", "1000000000"], "--max-retries 1000000000 must be in [0, 20]"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--timeout-s", "1e30"], "--timeout-s 1e+30 must be in (0, 86400]"),
    ("augment", ["generate", "--align", "{tmp}/align.csv", "--endpoint", "http://localhost:1", "--out",
                 "{tmp}/out.json", "--gap-s", "1e30"], "--gap-s 1e+30 must be in (0, 60]"),
    ("augment", ["random-match", "--augmentation", "{aug}", "--align", "{align}", "--pool-align", "{pool}", "--out",
                 "{tmp}/out.json", "--gap-s", "1e30"], "--gap-s 1e+30 must be in (0, 60]"),
    ("augment", ["oracle", "--data-root", "{one_story}", "--out-dir", "{tmp}/oracle"],
     "has one story (storya): a random control draws its words from the other stories; write the oracle alone "
     "(augment.py oracle --no-controls)"),
    # sweep.py: its own options and every score option, before a job starts
    ("sweep", ["--stories", "storya", "--mem-gb", "0", "--folder", "{tmp}/sweep"], "--mem-gb 0.0 must be in (0, inf)"),
    ("sweep", ["--stories", "storya", "--layers-per-job", "0", "--folder", "{tmp}/sweep"],
     "--layers-per-job 0 must be >= 1"),
    ("sweep", ["--stories", "storya", "--base.compare.fdr", "2", "--folder", "{tmp}/sweep"],
     "--compare.fdr 2.0 must be in (0, 1)"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """What some rows read: a one-story synthetic dataset (60 TRs: 54 rows after the trim), its
    oracle augmentation, and a model folder that reads it (a random GPT-2 with 48 positions; the
    rows stop before its weights or the dataset's BOLD are read)."""
    tmp = tmp_path_factory.mktemp("options")
    one = tmp / "one"
    make_synthetic(SyntheticConfig(out=one, n_stories=1, n_subjects=3, story_trs=60, space="tinysphere", n_vertices=40))
    vocab = sorted(json.loads((one / "associations.json").read_text()))
    model = tmp / "model"
    save_tokenizer(vocab, model)
    save_random_gpt2(SyntheticOptions(n_layers=1, positions=48), len(vocab) + 2, model)
    aug = write_oracle(one, tmp / "oracle", controls=False)["storya"][0]
    pool = tmp / "pool" / "align.csv"  # another story's words for a random control
    pool.parent.mkdir()
    pool.write_text("".join(f"w{i},w{i},{i:.1f},{i + 0.5:.1f}\n" for i in range(50)))
    return dict(model=str(model), one_story=str(one), aug=str(aug), align=str(one / "stimuli/gentle/storya/align.csv"),
                pool=str(pool))


@pytest.mark.parametrize("name, argv, error", ROWS, ids=[f"{r[0]}:{' '.join(r[1])}" for r in ROWS])
def test_bad_option_is_one_line_naming_it(shared, tmp_path, capsys, name, argv, error):
    fill = lambda s: s.format(tmp=tmp_path, **shared)  # noqa: E731
    argv = [fill(a) for a in argv]
    cache = tmp_path / "cache"
    if name == "score":
        argv += ["--output", str(tmp_path / "out"), "--cache-dir", str(cache), "--no-progress"]
    if name == "demo":
        argv += ["--output", str(tmp_path / "out")]
    assert call(name, argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and fill(error) in lines[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ds").exists() and not (tmp_path / "data").exists()
    assert not (cache / "builtin").exists() and not (cache / "bold").exists()  # no world made, no BOLD read


def test_failed_sweep_job_is_one_line_with_its_error_and_log(shared, tmp_path):
    """A job of submitit's local executor (a separate process) fails: one line naming the job,
    the job's own error and its log file, not the nested traceback submitit re-raises; sweep.py
    hands JobFailed to run_cli as a user error (exit 2). (No capsys: submitit's local executor
    and pytest's captured sys.stderr do not mix.)"""
    import tyro

    module = script("sweep")
    argv = ["--stories", "storya", "--executor", "local", "--folder", str(tmp_path / "sweep"), "--cpus-per-task", "1",
            "--mem-gb", "2", "--base.data.root", shared["one_story"], "--base.model.path", str(tmp_path / "nomodel")]
    with pytest.raises(module.JobFailed) as failed:
        module.main(tyro.cli(module.SweepConfig, args=argv))
    text = one_line(failed.value)
    assert text == str(failed.value) and text.startswith(
        f"sweep job nomodel_plain_storya_layers-all failed: FileNotFoundError: model folder not found: "
        f"{tmp_path / 'nomodel'} (log: ")
    log = Path(text.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "model folder not found" in log.read_text()
    assert module.JobFailed in module.ERRORS


@pytest.mark.parametrize("counts, note", [({"big": 30, "large": 30, "small": 2}, True),  # any order: >= 30 of 62
                                          ({f"s{i}": 6 for i in range(10)}, False)])
def test_validation_share_far_above_val_fraction_is_noted(counts, note):
    """Whole stories go to validation: a share far above --val-fraction (one big story) is said,
    with the smallest share one validation story can have; whole-story rounding is not."""
    module = script("make_association")
    from assocjax.tune import dataset

    records = [dict(story=s) for s, k in counts.items() for _ in range(k)]
    args = module.Args(stories=(), augmentations=(), out=Path("unused"), val_fraction=0.1, seed=1)
    train, val = dataset.split_by_story(records, args.val_fraction, args.seed)
    text = module.split_note(args, train, val)
    assert (text is not None) == note
    if note:
        n = len(records)
        assert text.startswith(f"--val-fraction 0.1 asked for {0.1 * n:.0f} of {n} records; whole stories give "
                               f"validation {len(val)} ({len(val) / n:.0%}")
        assert "The smallest story, small, holds 2 (3%)" in text
