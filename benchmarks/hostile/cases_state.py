"""Damaged state: caches, model folders, output folders (user files, a file as the folder,
concurrent runs, a full disk), resumed tuning runs with changed options."""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from checks import consistent_output, files_kept, put_user_file, unchanged
from fixtures import score_argv, tune_argv
from harness import SCRIPTS, Case

EITHER = ("error", "ok")


# --- caches: a copy of the clean run's cache, damaged; the rerun must give the clean numbers ---

def _cache(ctx) -> Path:
    return ctx.copy("baseline-cache")


def _fill(paths, value) -> None:
    for p in paths:
        a = np.load(p, mmap_mode="r+")
        a[...] = value
        a.flush()


def _truncate(paths) -> None:
    for p in paths:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def cache_case(name, damage) -> Case:
    def setup(ctx):
        damage(_cache(ctx))
    return Case(f"cache:{name}", "score.py", lambda c: score_argv(c.work, cache=c.dir / "baseline-cache"),
                ("ok", "note"), "cache", setup=setup, check=unchanged)


def _results(cache: Path) -> Path:
    return next((cache / "scores").iterdir())


def _drop_results(cache: Path) -> None:
    shutil.rmtree(cache / "scores")  # so that the damaged features / BOLD are read again


def _bold_nan(cache):
    _drop_results(cache)
    _fill([p for p in (cache / "bold").glob("*.npy")], np.nan)


def _bold_one_nan(cache):
    _drop_results(cache)
    _fill([sorted((cache / "bold").glob("*.npy"))[0]], np.nan)


def _features_ones(cache):
    _drop_results(cache)
    _fill((cache / "features").glob("*.npy"), 1.0)


def _layer_copied(cache):
    res = _results(cache)
    shutil.copy(res / "layer-000.npz", res / "layer-001.npz")


def _ceiling_copied(cache):
    res = _results(cache)
    shutil.copy(res / "layer-000.npz", res / "ceiling.npz")


def _results_truncated(cache):
    _truncate([_results(cache) / "layer-001.npz"])


def _features_truncated(cache):
    _drop_results(cache)
    _truncate((cache / "features").glob("*.npy"))


def _bold_truncated(cache):
    _drop_results(cache)
    _truncate((cache / "bold").glob("*.npy"))


def _key_deleted(cache):
    (_results(cache) / "key.json").unlink()


def _meta_swapped(cache):
    _drop_results(cache)
    metas = sorted((cache / "bold").glob("*.meta.npz"))
    a, b = metas[0].read_bytes(), metas[1].read_bytes()
    metas[0].write_bytes(b)
    metas[1].write_bytes(a)


def _bold_swapped(cache):
    _drop_results(cache)
    npys = sorted((cache / "bold").glob("*.npy"))
    a, b = npys[0].read_bytes(), npys[1].read_bytes()
    npys[0].write_bytes(b)
    npys[1].write_bytes(a)


def _features_json_garbage(cache):
    _drop_results(cache)
    for p in (cache / "features").glob("*.json"):
        p.write_text("{not json")


# --- model folders ---

BAD_MODEL = "badmodel"  # the damaged copy's folder: what an error about its weights must name


def model_case(name, damage, match=BAD_MODEL, expects=("error",)) -> Case:
    def setup(ctx):
        damage(ctx.copy("model", BAD_MODEL))
    return Case(f"model:{name}", "score.py", lambda c: score_argv(c.work, model=c.dir / BAD_MODEL), expects, match,
                setup=setup)


def _weights(folder: Path, fn) -> None:
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    save_file({k: fn(k, v) for k, v in tensors.items()}, path, metadata={"format": "pt"})


def _nan_all(folder):
    _weights(folder, lambda k, v: np.full_like(v, np.nan))


def _nan_block(folder):
    _weights(folder, lambda k, v: np.full_like(v, np.nan) if ".h.1." in k or k.startswith("h.1.") else v)


def _inf_one(folder):
    def fn(k, v):
        if "wte" in k:
            v = v.copy()
            v.flat[5] = np.inf
        return v
    _weights(folder, fn)


def _huge(folder):
    _weights(folder, lambda k, v: v * np.float32(1e30) if "c_fc.weight" in k else v)


# --- output folders ---

def _score_into(folder: str):
    return lambda c: score_argv(c.work, output=c.dir / folder, cache=c.dir / "baseline-cache")


def _previous_run(ctx, folder="out"):
    shutil.copytree(ctx.work / "baseline", ctx.dir / folder)
    _cache(ctx)


def _user_files_setup(ctx):
    _previous_run(ctx)
    for name in ("out/maps/poster.png", "out/figures/notes.txt", "out/my_analysis.py"):
        put_user_file(ctx, name)


def _subprocess(ctx, argv: list[str], script="score.py", preexec=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *argv], cwd=ctx.dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def _concurrent(ctx) -> dict:
    """Two runs of other layers into one --output at once, each with its own cache."""
    t0 = time.perf_counter()
    procs = [_subprocess(ctx, [*score_argv(ctx.work, output=ctx.dir / "out", cache=ctx.dir / f"cache{k}"),
                               "--features.layers", *layers]) for k, layers in enumerate((["0"], ["1", "2"]))]
    done = [(p.wait(), *p.communicate()) for p in procs]
    codes = [d[0] for d in done]
    worst = max(done, key=lambda d: (d[0] != 0, d[0]))
    return dict(exit=worst[0], stdout=worst[1], stderr=worst[2], seconds=time.perf_counter() - t0,
                detail=f"exits {codes}")


def _full_disk(limit_bytes: int, fresh_cache: bool):
    """A rerun (other layers) into the clean run's output folder while every file write past
    `limit_bytes` fails (RLIMIT_FSIZE, SIGXFSZ ignored: the write raises EFBIG like a full disk)."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    def action(ctx) -> dict:
        t0 = time.perf_counter()
        cache = ctx.dir / ("fresh-cache" if fresh_cache else "baseline-cache")
        p = _subprocess(ctx, [*score_argv(ctx.work, output=ctx.dir / "outdir", cache=cache),
                              "--features.layers", "0", "1"], preexec=preexec)
        out, err = p.communicate()
        return dict(exit=p.returncode, stdout=out, stderr=err, seconds=time.perf_counter() - t0)
    return action


# --- tuning ---

def _tuned_copy(ctx):
    ctx.copy("tuned")


def _tune_again(*extra):
    return lambda c: [*tune_argv(c.work, "tuned"), *extra]


def _corrupt_latest(ctx):
    _tuned_copy(ctx)
    latest = max((ctx.dir / "tuned" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    for f in (latest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0" * 16)


def _lr_recorded(ctx, res):
    """A resumed run that went on must not record a schedule no run followed."""
    import json

    run = ctx.dir / "tuned" / "run.json"
    cfg = json.loads(run.read_text()).get("config", {}) if run.is_file() else {}
    return None if not cfg or cfg.get("lr") in (None, 2e-4) else f"run.json records lr {cfg.get('lr')} for steps trained at 2e-4"


def _jsonl(text):
    def setup(ctx):
        (ctx.dir / "bad.jsonl").write_text(text)
    return setup


def _tune_bad_train(c):
    argv = tune_argv(c.work, "tuned")
    argv[argv.index("--train") + 1] = str(c.dir / "bad.jsonl")
    return argv


def state_cases() -> list[Case]:
    return [
        cache_case("BOLD cache filled with NaN", _bold_nan),
        cache_case("one subject's BOLD cache NaN", _bold_one_nan),
        cache_case("features overwritten with 1.0", _features_ones),
        cache_case("layer-000.npz copied over layer-001.npz", _layer_copied),
        cache_case("layer file copied over ceiling.npz", _ceiling_copied),
        cache_case("result file truncated", _results_truncated),
        cache_case("features .npy truncated", _features_truncated),
        cache_case("BOLD cache truncated", _bold_truncated),
        cache_case("results key.json deleted", _key_deleted),
        cache_case("two BOLD cache meta files swapped", _meta_swapped),
        cache_case("two BOLD cache files swapped", _bold_swapped),
        cache_case("features key .json not JSON", _features_json_garbage),
        Case("cache:--cache-dir is a file", "score.py", lambda c: score_argv(c.work, cache=c.work / "aug.json"),
             ("error",), "aug.json"),
        model_case("every weight NaN", _nan_all),
        model_case("one block NaN", _nan_block),
        model_case("one embedding inf", _inf_one),
        model_case("MLP weights x1e30", _huge, expects=("error", "note")),
        model_case("model.safetensors truncated", lambda f: _truncate([f / "model.safetensors"]), "model.safetensors"),
        model_case("model.safetensors random bytes",
                   lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)), "model.safetensors"),
        model_case("config.json not JSON", lambda f: (f / "config.json").write_text("{"), "config.json"),
        model_case("config.json n_layer a string", lambda f: (f / "config.json").write_text(
            (f / "config.json").read_text().replace('"n_layer": 2', '"n_layer": "two"')), "n_layer"),
        model_case("config.json n_layer 3 (weights of 2)", lambda f: (f / "config.json").write_text(
            (f / "config.json").read_text().replace('"n_layer": 2', '"n_layer": 3')), "h.2"),
        model_case("tokenizer files missing", lambda f: [(f / n).unlink() for n in ("vocab.json", "merges.txt")],
                   "tokenizer"),
        model_case("vocab.json not JSON", lambda f: (f / "vocab.json").write_text("{"), "vocab.json"),
        model_case("weights missing", lambda f: (f / "model.safetensors").unlink(), "safetensors"),
        Case("model:--model.path missing", "score.py", lambda c: score_argv(c.work, model=c.dir / "nomodel"),
             ("error",), "nomodel"),
        Case("model:--model.path is a file", "score.py", lambda c: score_argv(c.work, model=c.work / "aug.json"),
             ("error",), "aug.json"),
        Case("output:user files in maps/ figures/ and the folder", "score.py", _score_into("out"), EITHER, "out",
             setup=_user_files_setup, check=files_kept("out/maps/poster.png", "out/figures/notes.txt",
                                                       "out/my_analysis.py"), loss=True),
        Case("output:rerun with fewer layers into the old folder", "score.py",
             lambda c: [*_score_into("out")(c), "--features.layers", "0"], ("ok", "note", "error"), "out",
             setup=_previous_run, check=consistent_output("out")),
        Case("output:--output is a file", "score.py", _score_into("taken.txt"), ("error",), "--output",
             setup=lambda c: (c.dir / "taken.txt").write_text("x")),
        Case("output:--output inside a file", "score.py", _score_into("taken.txt/out"), ("error",), "taken.txt",
             setup=lambda c: (c.dir / "taken.txt").write_text("x")),
        Case("output:--output unicode", "score.py", _score_into("résultats ü✓"), ("ok",), setup=_cache),
        Case("output:two concurrent runs into one --output", "score.py", [], EITHER, "out", action=_concurrent,
             check=consistent_output("out"), timeout=300),
        Case("output:full disk while writing outputs", "score.py", [], ("error",), "outdir",
             setup=lambda c: _previous_run(c, "outdir"), action=_full_disk(40_000, False),
             check=consistent_output("outdir"), loss=True),
        Case("output:full disk while writing the cache", "score.py", [], ("error",), "cache",
             action=_full_disk(4_000, True)),
        Case("tune:resume a finished run with --optim.lr 0.01 --schedule.total-steps 8", "finetune.py",
             _tune_again("--optim.lr", "0.01", "--schedule.total-steps", "8"), ("error", "note"), "lr",
             setup=_tuned_copy,
             check=_lr_recorded),
        Case("tune:resume a finished run with --schedule.total-steps 8", "finetune.py",
             _tune_again("--schedule.total-steps", "8"), ("error", "note"), "total", setup=_tuned_copy),
        Case("tune:resume a finished run with --schedule.warmup-steps 3", "finetune.py",
             _tune_again("--schedule.warmup-steps", "3"), ("error", "note"), "warmup", setup=_tuned_copy),
        Case("tune:rerun of the same command", "finetune.py", _tune_again(), ("ok", "note"), setup=_tuned_copy),
        Case("tune:latest checkpoint corrupt", "finetune.py", _tune_again(), ("note",), "checkpoint",
             setup=_corrupt_latest),
        Case("tune:--model with NaN weights", "finetune.py",
             lambda c: [*tune_argv(c.work, "tuned")[2:], "--model", str(c.dir / BAD_MODEL)], ("error",), BAD_MODEL,
             setup=lambda c: _nan_all(c.copy("model", BAD_MODEL))),
        Case("tune:--train empty", "finetune.py", _tune_bad_train, ("error",), "bad.jsonl", setup=_jsonl("")),
        Case("tune:--train not JSON lines", "finetune.py", _tune_bad_train, ("error",), "bad.jsonl",
             setup=_jsonl("{oops\n")),
        Case("tune:--train record without output", "finetune.py", _tune_bad_train, ("error",), "output",
             setup=_jsonl('{"instruction": "a", "input": "b", "story": "s", "id": "1"}\n')),
        Case("tune:--train missing", "finetune.py", _tune_bad_train, ("error",), "bad.jsonl"),
        Case("tune:--out is a file", "finetune.py", lambda c: tune_argv(c.work, "taken.txt"), ("error",), "taken.txt",
             setup=lambda c: (c.dir / "taken.txt").write_text("x")),
        Case("tune:--out holds a user file", "finetune.py", lambda c: tune_argv(c.work, "mine"), EITHER, "mine",
             setup=lambda c: put_user_file(c, "mine/model/notes.txt"), check=files_kept("mine/model/notes.txt"),
             loss=True),
        Case("tune:--data.max-len above the model's positions", "finetune.py",
             _tune_again("--data.max-len", "4096"), ("error",), "max-len"),
        Case("tune:--method.frozen.layers last:9 of 2 blocks", "finetune.py",
             _tune_again("--method.name", "frozen", "--method.frozen.layers", "last:9"), ("error",), "layers"),
        Case("tune:--method.lora.targets nosuch", "finetune.py", _tune_again("--method.lora.targets", "nosuch"),
             ("error",), "nosuch"),
        Case("tune:--cross-fit 5 with 2 stories", "finetune.py", _tune_again("--cross-fit", "5"), ("error",),
             "cross-fit"),
    ]


