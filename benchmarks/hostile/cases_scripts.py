"""Bad inputs of the other scripts beyond their numeric options: augment.py's files and backends,
make_association.py, sweep.py, demo.py, make_synthetic.py, and score.py's comparisons."""
from __future__ import annotations

from cases_state import BAD_MODEL, _nan_all
from checks import files_kept, put_user_file
from fixtures import NARRATIVES, align_csv, score_argv
from harness import Case

EITHER = ("error", "ok")


def _aug(c, *args):
    return ["--align", str(align_csv(c.work)), *args]


def _model(c):
    return ["--model-path", str(c.work / "model"), "--every", "40", "--context-words", "100", "--max-new-tokens", "4"]


def _existing_aug(ctx):
    put_user_file(ctx, "mine.json")


def _truncated_aug(ctx):
    (ctx.dir / "cut.json").write_bytes((ctx.work / "aug.json").read_bytes()[:200])


def _association(c, *extra, stories=None, augs=None):
    stories = stories or [str(align_csv(c.work)), str(c.work / "other" / "align.csv")]
    augs = augs or [str(c.work / "aug.json"), str(c.work / "aug2.json")]
    return ["--stories", *stories, "--augmentations", *augs, "--out", "assoc", *extra]


def _sweep(c, *extra, executor="inline"):
    base = [a if not a.startswith("--") else "--base." + a[2:] for a in score_argv(c.work)]
    return ["--folder", "sweep", "--executor", executor, *base, *extra]


def _broken_model(ctx):
    """A model folder whose weights break only when the job loads them (config and header intact)."""
    folder = ctx.copy("model")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64])


def _nan_model(ctx):
    _nan_all(ctx.copy("model", BAD_MODEL))


def _one_story_synthetic(ctx):
    from assocjax.data.synthetic import SyntheticConfig, make_synthetic

    make_synthetic(SyntheticConfig(out=ctx.dir / "one", n_stories=1, n_subjects=2, story_trs=40, space="tiny",
                                   n_vertices=20))


def script_cases() -> list[Case]:
    aug = [
        Case("augment:generate --out over a hand-made file", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "mine.json"), *_model(c)], ("error",), "mine.json",
             setup=_existing_aug, check=files_kept("mine.json"), loss=True),
        Case("augment:import --out over a hand-made file", "augment.py",
             lambda c: ["import", str(c.work / "notes.txt"), *_aug(c, "--out", "mine.json")], ("error",), "mine.json",
             setup=_existing_aug, check=files_kept("mine.json"), loss=True),
        Case("augment:random-match --out over a hand-made file", "augment.py",
             lambda c: ["random-match", "--augmentation", str(c.work / "aug.json"), "--pool-align",
                        str(c.work / "other" / "align.csv"), *_aug(c, "--out", "mine.json")], ("error",), "mine.json",
             setup=_existing_aug, check=files_kept("mine.json"), loss=True),
        Case("augment:generate with both backends", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), *_model(c), "--endpoint", "http://127.0.0.1:9"],
             ("error",), "--endpoint"),
        Case("augment:generate with no backend", "augment.py", lambda c: ["generate", *_aug(c, "--out", "g.json")],
             ("error",), "--model-path"),
        Case("augment:generate --align missing", "augment.py",
             lambda c: ["generate", "--align", "nofile.csv", "--out", "g.json", *_model(c)], ("error",), "nofile.csv"),
        Case("augment:generate --prompt-template missing", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), *_model(c), "--prompt-template", "nope.txt"],
             ("error",), "nope.txt"),
        Case("augment:generate --prompt-template without {context}", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), *_model(c), "--prompt-template", "t.txt"],
             ("error",), "context", setup=lambda c: (c.dir / "t.txt").write_text("Say something.")),
        Case("augment:generate endpoint refused (closed port)", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), "--endpoint", "http://127.0.0.1:9",
                        "--max-retries", "0", "--timeout-s", "2", "--every", "40"], ("error",), "127.0.0.1:9"),
        Case("augment:generate --model-path with NaN weights", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), "--model-path", str(c.dir / BAD_MODEL), "--every", "40",
                        "--context-words", "100", "--max-new-tokens", "4"], ("error",), BAD_MODEL,
             setup=_nan_model),
        Case("augment:generate --max-new-tokens 100000", "augment.py",
             lambda c: ["generate", *_aug(c, "--out", "g.json"), *_model(c), "--max-new-tokens", "100000"],
             ("error",), "max-new-tokens"),
        Case("augment:generate --data-root without --story", "augment.py",
             lambda c: ["generate", "--data-root", str(c.work / "pieman"), "--out", "g.json", *_model(c)], ("error",),
             "--story"),
        Case("augment:generate --story unknown", "augment.py",
             lambda c: ["generate", "--data-root", str(c.work / "pieman"), "--story", "nosuch", "--out", "g.json",
                        *_model(c)], ("error",), "nosuch"),
        Case("augment:import input missing", "augment.py", lambda c: ["import", "nofile.txt", *_aug(c, "--out", "i.json")],
             ("error",), "nofile.txt"),
        Case("augment:import inline text of another story", "augment.py",
             lambda c: ["import", "t.txt", *_aug(c, "--out", "i.json")], ("error",), "t.txt",
             setup=lambda c: (c.dir / "t.txt").write_text("completely [other] words here")),
        Case("augment:import empty input", "augment.py", lambda c: ["import", "t.txt", *_aug(c, "--out", "i.json")],
             ("error",), "t.txt", setup=lambda c: (c.dir / "t.txt").write_text("")),
        Case("augment:random-match --tokenizer /nope", "augment.py",
             lambda c: ["random-match", "--augmentation", str(c.work / "aug.json"), "--pool-align",
                        str(c.work / "other" / "align.csv"), "--tokenizer", "/nope", *_aug(c, "--out", "r.json")],
             ("error",), "/nope"),
        Case("augment:random-match with no pool", "augment.py",
             lambda c: ["random-match", "--augmentation", str(c.work / "aug.json"), *_aug(c, "--out", "r.json")],
             ("error",), "--pool-align"),
        Case("augment:random-match pool is the story itself", "augment.py",
             lambda c: ["random-match", "--augmentation", str(c.work / "aug.json"), "--pool-align",
                        str(align_csv(c.work)), *_aug(c, "--out", "r.json")], ("error", "note"), "pool"),
        Case("augment:random-match augmentation truncated", "augment.py",
             lambda c: ["random-match", "--augmentation", "cut.json", "--pool-align",
                        str(c.work / "other" / "align.csv"), *_aug(c, "--out", "r.json")], ("error",), "cut.json",
             setup=_truncated_aug),
        Case("augment:show --tokenizer /nope", "augment.py",
             lambda c: ["show", str(c.work / "aug.json"), "--tokenizer", "/nope"], ("error",), "/nope"),
        Case("augment:show a missing file", "augment.py", ["show", "nofile.json"], ("error",), "nofile.json"),
        Case("augment:show a truncated file", "augment.py", ["show", "cut.json"], ("error",), "cut.json",
             setup=_truncated_aug),
        Case("augment:validate a truncated file", "augment.py", ["validate", "cut.json"], ("error",), "cut.json",
             setup=_truncated_aug, exits=(1,)),
        Case("augment:validate against another story", "augment.py",
             lambda c: ["validate", str(c.work / "aug2.json"), *_aug(c)], ("error",), "story", exits=(1,)),
        Case("augment:validate a JSON list", "augment.py", ["validate", "list.json"], ("error",), "list.json",
             setup=lambda c: (c.dir / "list.json").write_text("[1, 2]"), exits=(1,)),
        Case("augment:oracle on a real-metadata dataset", "augment.py",
             lambda c: ["oracle", "--data-root", str(c.work / "pieman"), "--out-dir", "o"], EITHER, "pieman"),
        Case("augment:oracle on a one-story synthetic dataset", "augment.py",
             lambda c: ["oracle", "--data-root", str(c.dir / "one"), "--out-dir", "o"], EITHER, "stor",
             setup=_one_story_synthetic),
        Case("augment:oracle --data-root missing", "augment.py", ["oracle", "--data-root", "nowhere", "--out-dir", "o"],
             ("error",), "nowhere"),
        Case("augment:oracle --out-dir is a file", "augment.py",
             lambda c: ["oracle", "--data-root", str(c.dir / "one"), "--out-dir", "taken.txt"], ("error",), "taken.txt",
             setup=lambda c: (_one_story_synthetic(c), (c.dir / "taken.txt").write_text("x"))),
    ]
    assoc = [
        Case("association:--val-fraction 0.1 with 2 stories", "make_association.py",
             lambda c: _association(c, "--val-fraction", "0.1"), ("note", "error"), "val"),
        Case("association:--stories missing", "make_association.py", lambda c: _association(c, stories=["nowhere.csv"]),
             ("error",), "nowhere.csv"),
        Case("association:--augmentations empty folder", "make_association.py",
             lambda c: _association(c, augs=[str(c.dir / "none")]), ("error",), "none",
             setup=lambda c: (c.dir / "none").mkdir()),
        Case("association:augmentation of an unlisted story", "make_association.py",
             lambda c: _association(c, stories=[str(align_csv(c.work))]), ("error", "note"), "other"),
        Case("association:--passage-words 80 30", "make_association.py",
             lambda c: _association(c, "--passage-words", "80", "30"), ("error",), "passage-words"),
        Case("association:--passage-words 0 0", "make_association.py",
             lambda c: _association(c, "--passage-words", "0", "0"), ("error",), "passage-words"),
        Case("association:--passage-words -5 10", "make_association.py",
             lambda c: _association(c, "--passage-words", "-5", "10"), ("error",), "passage-words"),
        Case("association:--out is a file", "make_association.py", lambda c: [*_association(c)[:-2], "--out", "t.txt"],
             ("error",), "t.txt", setup=lambda c: (c.dir / "t.txt").write_text("x")),
        # correct: refused, or the user's file kept as train.jsonl.orig with a warning naming it
        Case("association:--out holds a user file", "make_association.py", _association, ("error", "note"),
             "train.jsonl",
             setup=lambda c: put_user_file(c, "assoc/train.jsonl"), check=files_kept("assoc/train.jsonl", backup=True),
             loss=True),
    ]
    sweep = [
        Case("sweep:no --stories", "sweep.py", _sweep, ("error",), "--stories"),
        Case("sweep:unknown story", "sweep.py", lambda c: _sweep(c, "--stories", "nosuch"), ("error",), "nosuch"),
        Case("sweep:--models missing folder", "sweep.py", lambda c: _sweep(c, "--stories", "pieman", "--models", "nope"),
             ("error",), "nope"),
        Case("sweep:--augment-files of another story", "sweep.py",
             lambda c: _sweep(c, "--stories", "pieman", "--augment-files", str(c.work / "aug2.json")), ("error",),
             "aug2.json"),
        Case("sweep:--executor local with a failing job", "sweep.py",
             lambda c: _sweep(c, "--stories", "pieman", "--models", str(c.dir / "model"), executor="local"),
             ("error",), "pieman", setup=_broken_model, timeout=300),
        Case("sweep:--layers-per-job with no layers", "sweep.py",
             lambda c: _sweep(c, "--stories", "pieman", "--layers-per-job", "1"), ("ok", "note", "error"), "layers"),
    ]
    compare = [
        Case("compare:--compare.names without --compare.models", "score.py",
             lambda c: [*score_argv(c.work), "--compare.names", "lora"], ("error",), "--compare.names"),
        Case("compare:--compare.names count differs", "score.py",
             lambda c: [*score_argv(c.work), "--compare.models", str(c.work / "tuned"), "--compare.names", "a", "b"],
             ("error",), "--compare.names"),
        Case("compare:--compare.models missing", "score.py",
             lambda c: [*score_argv(c.work), "--compare.models", "nomodel"], ("error",), "nomodel"),
        Case("compare:--compare.models with NaN weights", "score.py",
             lambda c: [*score_argv(c.work), "--compare.models", str(c.dir / BAD_MODEL)], ("error",), BAD_MODEL,
             setup=_nan_model),
        Case("compare:--augment.files of another story", "score.py",
             lambda c: [*score_argv(c.work), "--augment.files", str(c.work / "aug2.json")], ("error",), "aug2.json"),
        Case("compare:--augment.files truncated", "score.py",
             lambda c: [*score_argv(c.work), "--augment.files", "cut.json"], ("error",), "cut.json",
             setup=_truncated_aug),
        Case("compare:--augment.files missing", "score.py",
             lambda c: [*score_argv(c.work), "--augment.files", "nofile.json"], ("error",), "nofile.json"),
        Case("compare:--augment.compare without files", "score.py",
             lambda c: [*score_argv(c.work), "--augment.compare"], ("error",), "--augment.files"),
    ]
    small = ["--n-stories", "3", "--trs-per-story", "60", "--n-voxels", "40", "--output", "out"]
    demo = [
        Case("demo:--n-subjects 1", "demo.py", [*small, "--n-subjects", "1"], ("error", "note"), "n-subjects"),
        Case("demo:--n-stories 1", "demo.py", [*small[2:], "--n-stories", "1"], ("error", "note"), "n-stories"),
        Case("demo:--delays -1 0", "demo.py", [*small, "--delays", "-1", "0"], ("error",), "delays"),
        Case("demo:--delays 1 1", "demo.py", [*small, "--delays", "1", "1"], ("error",), "delays"),
        Case("demo:--delays 500 (longer than a story)", "demo.py", [*small, "--delays", "500"], ("error",), "delays"),
        Case("demo:--output is a file", "demo.py", [*small[:-1], "t.txt"], ("error",), "t.txt",
             setup=lambda c: (c.dir / "t.txt").write_text("x")),
    ]
    tiny = ["--space", "tiny", "--n-vertices", "30", "--story-trs", "40", "--n-stories", "1", "--n-subjects", "2"]
    synthetic = [
        Case("synthetic:--from-metadata missing", "make_synthetic.py", ["--out", "ds", "--from-metadata", "nowhere"],
             ("error",), "nowhere"),
        Case("synthetic:--stories unknown in the metadata", "make_synthetic.py",
             ["--out", "ds", "--from-metadata", str(NARRATIVES), "--stories", "nosuch", "--n-vertices", "20",
              "--space", "tiny"], ("error",), "nosuch"),
        Case("synthetic:--out non-empty without --overwrite", "make_synthetic.py", ["--out", "ds", *tiny], ("error",),
             "ds", setup=lambda c: put_user_file(c, "ds/mine.txt"), check=files_kept("ds/mine.txt"), loss=True),
        Case("synthetic:--out is a file", "make_synthetic.py", ["--out", "t.txt", *tiny], ("error",), "t.txt",
             setup=lambda c: (c.dir / "t.txt").write_text("x")),
        Case("synthetic:--volume-shape 0 0 0", "make_synthetic.py", ["--out", "ds", *tiny, "--volume-shape", "0", "0", "0"],
             ("error",), "volume-shape"),
        Case("synthetic:--fir-delays -1", "make_synthetic.py",
             ["--out", "ds", *tiny, "--response", "fir", "--fir-delays", "-1"], ("error",), "fir-delays"),
        Case("synthetic:--snr.language-stg -1", "make_synthetic.py", ["--out", "ds", *tiny, "--snr.language-stg", "-1"],
             ("error",), "snr"),
        Case("synthetic:--snr.language-stg nan", "make_synthetic.py",
             ["--out", "ds", *tiny, "--snr.language-stg", "nan"], ("error",), "snr"),
        Case("synthetic:--space fsaverage9 unknown", "make_synthetic.py",
             ["--out", "ds", "--space", "fsaverage9", "--story-trs", "40", "--n-stories", "1", "--n-subjects", "2"],
             ("error",), "fsaverage9"),
    ]
    return [*aug, *assoc, *sweep, *compare, *demo, *synthetic]

