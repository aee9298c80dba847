"""Full-resolution brain-score benchmark (issue 12): wall time and peak memory of one
`scripts/score.py` run on a synthetic copy of a real Narratives story at fsaverage6
(2 x 40962 vertices), with a GPT-2-small-shaped random model and the real GPT-2 tokenizer.

    python benchmarks/pipeline.py                                   # pieman, all 75 usable listeners, 13 hidden states
    python benchmarks/pipeline.py --n-subjects 4 --layers 0 6       # first 4 listeners, 2 hidden states
    python benchmarks/pipeline.py --story 21styear --memory-gb 60   # the longest story (2225 story TRs)
    python benchmarks/pipeline.py --build-only                      # make the cached inputs and stop
    python benchmarks/pipeline.py --n-subjects 2 -- --ridge.target-chunk 4096   # after --: score.py options
    python benchmarks/pipeline.py --n-subjects 2 --extra="--ridge.target-chunk 4096"   # the same (note the =)

Inputs are built once and cached under --work (default .assocjax_cache/bench in this repository,
ignored by git; printed at the start):
  data/<story>-<space>-seed<S>/narratives  every usable listener of the story (real participants,
      exclusions, events, sidecars and alignment; synthetic images), by scripts/make_synthetic.py,
      timed like the score run (generation.json)
  models/gpt2-small-random-seed<S>  config.json + model.safetensors written with numpy (12 layers,
      768 hidden, 12 heads, 1024 positions, vocab 50257, N(0, 0.02) weights, zero biases, unit
      norms, tied embeddings) + the real GPT-2 tokenizer files
Each score run gets a fresh --cache-dir (so nothing is reused; deleted afterwards unless
--keep-cache) and runs as a subprocess with PYTHONPATH = this repository. The harness polls
the RSS of the whole process tree every --poll seconds (psutil: a benchmark-only dependency,
`pip install psutil`) and also reads the kernel's max RSS of the child on exit (wait4).
The JSON record is printed and written to runs/<name>/record.json (and appended to --record).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tyro

from common import WORK

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GIB = 2 ** 30
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)


@dataclasses.dataclass
class Config:
    """Benchmark scripts/score.py at full resolution (module docstring)."""

    work: Path = WORK
    """cache of the synthetic dataset, the model and the runs (tens of GB for pieman at fsaverage6; default:
    .assocjax_cache/bench in this repository, ignored by git)"""
    story: str = "pieman"
    """Narratives task; the dataset holds every usable listener of it"""
    n_subjects: int | None = None
    """score only the first N included subjects (passed as --data.subjects); unset: all"""
    layers: tuple[int, ...] = ()
    """hidden states to score (--features.layers); empty: all 13"""
    memory_gb: float | None = None
    """passed as --memory-gb, only if this score.py accepts it (checked with --help)"""
    extra: str = ""
    """more score.py options as one shell-quoted string, given with = (--extra="--a 1"), or put them after --"""
    space: str = "fsaverage6"
    seed: int = 0
    """seed of the synthetic data and of the random model"""
    metadata: Path = SHARED / "narratives"
    """real Narratives metadata (participants, exclusions, events, sidecars, alignments)"""
    tokenizer: Path = SHARED / "tokenizers" / "gpt2"
    """folder with the GPT-2 vocab.json and merges.txt"""
    poll: float = 0.2
    """seconds between RSS samples"""
    build_only: bool = False
    """make (or check) the cached dataset and model, then stop"""
    keep_cache: bool = False
    """keep the run's --cache-dir (word features, per-layer results)"""
    record: Path | None = None
    """also append the JSON record (one line) to this file"""
    peer_targets: int = 0
    """after the run, solve this many of its targets (all fits x the first vertices) with assocjax and with
    himalaya side by side (`himalaya_side_by_side`); 0: no peer"""
    peer_batch: int | None = None
    """himalaya's n_targets_batch (unset: all targets at once)"""
    peer_backend: str = "numpy"
    """himalaya backend of the peer: numpy, torch, torch_cuda"""
    generate_subjects: int | None = None
    """generate only the first N listed subjects of the story (a smaller dataset, e.g. on a lent GPU machine)"""
    disk_check: bool = False
    """before the run, empty the page cache (needs root: else said in the record) and time a sequential read of
    the story's image files, then empty it again: the disk's own rate, to compare with the run's BOLD read"""


# ---------------------------------------------------------------- measuring a process tree

def run_measured(cmd: list[str], log: Path, poll: float = 0.2, env: dict | None = None, bin_s: float = 5.0) -> dict:
    """Run cmd (stdout + stderr -> log) and measure it: wall seconds, the peak of the summed RSS
    of the process and all its descendants (sampled every `poll` s), the kernel's max RSS of
    the process (wait4; its largest single moment, sampling-free), and the RSS over time
    (the largest sample of every `bin_s` seconds, [start s, GiB])."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak, timeline = 0, {}
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        root = psutil.Process(proc.pid)
        while True:
            total = 0
            try:
                for p in [root] + root.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                pass
            peak = max(peak, total)
            b = int((time.perf_counter() - t0) // bin_s)
            timeline[b] = max(timeline.get(b, 0), total)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(poll)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return dict(returncode=proc.returncode, wall_s=round(wall, 2), peak_rss_gib=round(peak / GIB, 3),
                max_rss_gib=round(usage.ru_maxrss * 1024 / GIB, 3), poll_s=poll, t0_unix=time.time() - wall,
                rss_timeline=[[b * bin_s, round(v / GIB, 2)] for b, v in sorted(timeline.items())])


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _machine() -> dict:
    import psutil

    return dict(host=platform.node(), cpus=os.cpu_count(), ram_gib=round(psutil.virtual_memory().total / GIB, 1),
                load_avg=[round(x, 2) for x in os.getloadavg()], python=platform.python_version())


def _git() -> dict:
    def git(*args):
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else None

    return dict(commit=git("rev-parse", "HEAD"), branch=git("rev-parse", "--abbrev-ref", "HEAD"),
                dirty=bool(git("status", "--porcelain", "--untracked-files=no")))


# ---------------------------------------------------------------- the disk's own rate

def drop_page_cache() -> str | None:
    """Write dirty pages and empty the page cache; None when done, else why not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return None
    except OSError as e:
        return f"page cache not emptied ({e}): the reads below may come from memory"


def image_files(root: Path, story: str, space: str) -> list[Path]:
    return sorted(p for p in root.rglob(f"*task-{story}_*space-{space}*") if p.suffix in (".gii", ".gz"))


def sequential_read(paths: list[Path], block: int = 16 * 2 ** 20) -> dict:
    """Read every file start to end in `block`-byte reads, discarding the bytes: the disk's rate."""
    total, t0 = 0, time.perf_counter()
    buf = bytearray(block)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    s = time.perf_counter() - t0
    return dict(files=len(paths), bytes=total, seconds=round(s, 2), mb_s=round(total / s / 1e6, 1))


def disk_check(root: Path, story: str, space: str) -> dict:
    notes = [why for why in [drop_page_cache()] if why]
    got = sequential_read(image_files(root, story, space))
    notes += [why for why in [drop_page_cache()] if why]
    return dict(got, notes=notes)


# ---------------------------------------------------------------- cached inputs

def _listed_subjects(metadata: Path, story: str) -> int:
    """Participants listing the story: an upper bound on its usable listeners (the generator
    takes the first N usable ones, so asking for this many takes all of them)."""
    with open(metadata / "participants.tsv", newline="") as f:
        return sum(story in row["task"].split(",") for row in csv.DictReader(f, delimiter="\t"))


def _estimate_bytes(metadata: Path, story: str, space: str) -> int:
    """Rough size of the images: every listed scan, two hemispheres, float32 that zlib cannot
    shrink, base64 (x 4/3). Scan lengths come from event_meta (the generator adds the events' end)."""
    from assocjax.data.synthetic import SPACE_VERTICES

    meta = json.loads((metadata / "code/event_meta.json").read_text())[story]
    n_trs = max(s["onset"] + s["duration"] for s in meta.values()) + 20
    n_scans = len(list(metadata.glob(f"sub-*/func/sub-*_task-{story}_*bold.json")))
    return int(n_scans * 2 * SPACE_VERTICES[space] * n_trs * 4 * 4 / 3)


def ensure_dataset(cfg: Config) -> tuple[Path, dict]:
    """(root, generation record) of the cached dataset, generated first if missing."""
    n = _listed_subjects(cfg.metadata, cfg.story)
    if n == 0:
        raise ValueError(f"no participant in {cfg.metadata}/participants.tsv lists story {cfg.story!r}")
    n = min(n, cfg.generate_subjects or n)
    args = ["--from-metadata", str(cfg.metadata), "--stories", cfg.story, "--n-subjects", str(n),
            "--space", cfg.space, "--seed", str(cfg.seed)]
    final = cfg.work / "data" / (f"{cfg.story}-{cfg.space}-seed{cfg.seed}" + (f"-first{n}" if cfg.generate_subjects else ""))
    done = final / "generation.json"
    if done.is_file():
        rec = json.loads(done.read_text())
        if rec["args"] == args:
            return final / "narratives", rec
        raise RuntimeError(f"{final} was made with other options ({rec['args']}); delete it to rebuild")
    need, free = _estimate_bytes(cfg.metadata, cfg.story, cfg.space), shutil.disk_usage(cfg.work).free
    if need > 0.9 * free:
        raise RuntimeError(f"the {cfg.story} dataset needs about {need / GIB:.0f} GiB; {cfg.work} has "
                           f"{free / GIB:.0f} GiB free")
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, str(REPO / "scripts/make_synthetic.py"), "--out", str(tmp / "narratives"), *args]
    print(f"generating {cfg.story} ({n} listed subjects, ~{need / GIB:.0f} GiB): {shlex.join(cmd)}", flush=True)
    try:
        run = run_measured(cmd, tmp / "generation.log", cfg.poll, _env())
        if run["returncode"] != 0:
            raise RuntimeError(f"generation failed ({run['returncode']}); see {tmp / 'generation.log'}:\n"
                               + (tmp / "generation.log").read_text()[-3000:])
        manifest = json.loads((tmp / "narratives/manifest.json").read_text())
        size = sum(p.stat().st_size for p in (tmp / "narratives").rglob("*") if p.is_file())
        rec = dict(args=args, command=shlex.join(cmd), **run, bytes_gib=round(size / GIB, 2),
                   n_scans=len(manifest["scans"]), machine=_machine(), git=_git(),
                   made=datetime.datetime.now().isoformat(timespec="seconds"))
        (tmp / "generation.json").write_text(json.dumps(rec, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "narratives", rec


def write_random_gpt2(folder: Path, tokenizer: Path, seed: int = 0, std: float = 0.02, **shape) -> Path:
    """A Hugging Face GPT-2 folder with random weights, written with numpy + safetensors (no torch):
    N(0, std) embeddings and weight matrices, zero biases, unit norms, tied output embeddings; the
    tokenizer's vocab.json and merges.txt copied beside them. The weights' names, shapes and roles
    come from assocjax's GPT-2 family (its parameter spec and Hugging Face names)."""
    from safetensors.numpy import save_file

    s = {**GPT2_SMALL, **shape}
    eos = s["vocab_size"] - 1  # <|endoftext|> in the GPT-2 vocabulary
    config = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_ctx=s["n_positions"],
                  activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=std,
                  tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, torch_dtype="float32", **s)
    t = random_weights(config, np.random.default_rng([seed, 12]), std)
    special = "<|endoftext|>"
    tok_config = dict(tokenizer_class="GPT2Tokenizer", model_max_length=s["n_positions"], add_prefix_space=False,
                      bos_token=special, eos_token=special, unk_token=special)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(t, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", 0o644)  # safetensors writes 0600
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
        for f in ("vocab.json", "merges.txt"):
            if not (tokenizer / f).is_file():
                raise FileNotFoundError(f"{tokenizer / f} not found: --tokenizer needs GPT-2's vocab.json and merges.txt")
            shutil.copyfile(tokenizer / f, tmp / f)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def random_weights(config: dict, rng: np.random.Generator, std: float) -> dict[str, np.ndarray]:
    """Hugging Face name -> float32 tensor for the model of `config` (a config.json dict):
    N(0, std) matrices and embeddings, drawn in our (in, out) layout, the model-wide ones first
    and then layer by layer in the parameter spec's order; zero biases, unit norm scales."""
    from assocjax.models import from_hf
    from assocjax.models.params import WEIGHT_ROLES, param_spec, params_to_hf

    cfg = from_hf(config, "the benchmark's config")
    spec = param_spec(cfg)

    def draw(p):
        if p.role in WEIGHT_ROLES:
            return rng.standard_normal(p.shape, dtype=np.float32) * np.float32(std)
        return (np.ones if p.role == "scale" else np.zeros)(p.shape, np.float32)

    params = {name: draw(p) for name, p in spec.items() if name != "layers"}
    layers = {name: np.empty(p.shape, np.float32) for name, p in spec["layers"].items()}
    for i in range(cfg.n_layers):
        for name, p in spec["layers"].items():
            layers[name][i] = draw(p._replace(shape=p.shape[1:]))
    return {k: np.ascontiguousarray(v) for k, v in params_to_hf(cfg, {**params, "layers": layers}).items()}


def check_tokenizer(folder: Path) -> None:
    """AutoTokenizer loads the folder as the real GPT-2 tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("Hello world")["input_ids"]
    if ids != [15496, 995] or len(tok) != 50257 or tok.eos_token != "<|endoftext|>":
        raise RuntimeError(f"{folder}: not GPT-2's tokenizer ({type(tok).__name__}: 'Hello world' -> {ids}, "
                           f"{len(tok)} tokens, eos {tok.eos_token!r})")


def ensure_model(cfg: Config) -> Path:
    folder = cfg.work / "models" / f"gpt2-small-random-seed{cfg.seed}"
    if not (folder / "model.safetensors").is_file():
        print(f"writing the random GPT-2-small model to {folder}", flush=True)
        write_random_gpt2(folder, cfg.tokenizer, cfg.seed)
    check_tokenizer(folder)
    return folder


# ---------------------------------------------------------------- the score run

def score_accepts(option: str) -> bool:
    """Whether this repository's scripts/score.py has `option` (from its --help)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts/score.py"), "--help"], capture_output=True,
                          text=True, env={**_env(), "COLUMNS": "200"}, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/score.py --help failed:\n{done.stderr[-2000:]}")
    return re.search(rf"{re.escape(option)}\b", done.stdout) is not None


def _written(folder: Path, t0_unix: float) -> list:
    """[seconds after the start, MiB, path] of every file under folder, by time: when the run
    wrote its word features, ceiling and each layer's results (stage ends, without the run's help)."""
    files = [(p.stat().st_mtime - t0_unix, p.stat().st_size / 2 ** 20, str(p.relative_to(folder)))
             for p in folder.rglob("*") if p.is_file()]
    return [[round(t, 1), round(mb, 1), name] for t, mb, name in sorted(files)]


def _stage_timings(run: dict) -> dict:
    """Whatever timing the run recorded: its total seconds and any timing/stage entries."""
    keys = [k for k in run if k == "seconds" or re.search(r"tim(e|ing)|stage", k)]
    return {k: run[k] for k in keys}


def _bold_rate(got: dict, disk: dict | None, root: Path, cfg: Config) -> dict | None:
    """The run's BOLD stage as a read rate: the images' bytes over its seconds (run.json), and
    its ratio to the disk's sequential rate when measured."""
    secs = got.get("stages", {}).get("bold", {}).get("seconds") if got else None
    if not secs or cfg.n_subjects is not None:  # the images' bytes are every listener's
        return None
    size = sum(p.stat().st_size for p in image_files(root, cfg.story, cfg.space))  # all listeners' images
    out = dict(bytes=size, seconds=secs, mb_s=round(size / secs / 1e6, 1))
    if disk:
        out["of_disk_rate"] = round(out["mb_s"] / disk["mb_s"], 3)
    return out


def run_score(cfg: Config, root: Path, model: Path, extra: list[str]) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    task = manifest["tasks"][cfg.story]
    subjects = task["included_subjects"]
    if cfg.n_subjects is not None:
        if not 1 <= cfg.n_subjects <= len(subjects):
            raise ValueError(f"--n-subjects {cfg.n_subjects}: the {cfg.story} dataset has {len(subjects)} included subjects")
        subjects = subjects[: cfg.n_subjects]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.story}-n{len(subjects)}-L{'-'.join(map(str, cfg.layers)) or 'all'}-{stamp}"
    folder = cfg.work / "runs" / name
    cmd = [sys.executable, str(REPO / "scripts/score.py"), "--data.root", str(root), "--model.path", str(model),
           "--data.tasks", cfg.story, "--data.space", cfg.space, "--output", str(folder / "output"),
           "--cache-dir", str(folder / "cache"), "--no-progress"]
    if cfg.n_subjects is not None:
        cmd += ["--data.subjects", *subjects]
    if cfg.layers:
        cmd += ["--features.layers", *map(str, cfg.layers)]
    notes = []
    if cfg.memory_gb is not None:
        if score_accepts("--memory-gb"):
            cmd += ["--memory-gb", str(cfg.memory_gb)]
        else:
            notes.append(f"--memory-gb {cfg.memory_gb} not passed: this scripts/score.py has no --memory-gb")
    cmd += extra
    disk = disk_check(root, cfg.story, cfg.space) if cfg.disk_check else None
    if disk:
        print(f"disk: {disk['bytes'] / 1e9:.2f} GB of images read sequentially at {disk['mb_s']} MB/s", flush=True)
    print(f"running: {shlex.join(cmd)}", flush=True)
    machine = _machine()
    run = run_measured(cmd, folder / "score.log", cfg.poll, _env())
    if run["returncode"] != 0:
        notes.append("score.py failed: see score.log (tail below)")
        notes.append((folder / "score.log").read_text()[-3000:])
    run_json = folder / "output" / "run.json"
    got = json.loads(run_json.read_text()) if run_json.is_file() else {}
    n_v = {h: sum(p["n_vertices"][h] for p in manifest["parcels"].values()) for h in "LR"}
    scans = [s for s in manifest["scans"] if s["task"] == cfg.story]
    a, b = task["story_window_trs"]
    n_layers = json.loads((model / "config.json").read_text())["n_layer"] + 1
    record = dict(
        benchmark="pipeline", story=cfg.story, space=cfg.space, n_subjects=len(subjects),
        n_vertices=sum(n_v.values()),
        n_vertices_with_data=sum(p["n_vertices"][h] for name, p in manifest["parcels"].items() if p["index"] for h in "LR"),
        n_trs_scan=max(s["n_trs"] for s in scans), n_trs_story=b - a,
        layers=list(cfg.layers) or f"all ({n_layers})", n_layers_scored=len(cfg.layers) or n_layers,
        memory_gb=cfg.memory_gb, extra=extra, **run, run_json=_stage_timings(got),
        cache_written=_written(folder / "cache", run["t0_unix"]),
        run_summary={k: got.get("summary", {}).get(k) for k in ("cv_best_layer",)} if got else None,
        command=shlex.join(cmd), folder=str(folder), machine_before=machine, load_avg_after=_machine()["load_avg"],
        git=_git(), notes=notes, disk=disk, bold_read=_bold_rate(got, disk, root, cfg))
    if not cfg.keep_cache and not cfg.peer_targets:  # the peer reads the run's BOLD cache (`himalaya_side_by_side`)
        shutil.rmtree(folder / "cache", ignore_errors=True)
    (folder / "record.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record


def himalaya_side_by_side(cfg: Config, root: Path, model: Path, record: dict) -> dict:
    """The run's ridge problem on a slice of its targets, solved by assocjax's pipeline solver
    (`fitting.solve_layer`) and by himalaya's KernelRidgeCV in the nested procedure a
    researcher writes with it (benchmarks/himalaya_nested.py), in this process, one after the
    other: same design (the first scored layer's, as score.py builds it), same BOLD (the
    pipeline's per-story z-scored responses), same buffered folds and alphas. Returns both
    times, the per-target rates, the ratio, and the largest |dr| between them (himalaya fits
    an intercept on z-scored features; assocjax also z-scores each target per story inside
    every fold: small differences are expected and reported, not hidden)."""
    import jax

    from assocjax.pipeline import DataOptions, FeatureOptions, ModelOptions, ScoreConfig
    from assocjax.pipeline import budget as budget_mod
    from assocjax.pipeline.bold import prepare
    from assocjax.pipeline.design import layer_design, word_feats
    from assocjax.pipeline.fitting import fitting, solve_layer
    from assocjax.pipeline.inputs import select
    from assocjax.models import load_pretrained
    from himalaya_nested import himalaya_brain_score

    layer = record["peer_layer"]
    cache = Path(record["folder"]) / "cache"  # the run's: its BOLD blocks are read, not written again
    subjects = tuple(json.loads((root / "manifest.json").read_text())["tasks"][cfg.story]["included_subjects"])
    subjects = subjects[: cfg.n_subjects] if cfg.n_subjects else subjects
    sc = ScoreConfig(output=Path(record["folder"]) / "peer-output", cache_dir=cache,
                     data=DataOptions(root=root, tasks=(cfg.story,), space=cfg.space, subjects=subjects),
                     model=ModelOptions(path=str(model)), features=FeatureOptions(layers=(layer,)), progress=False)
    sel = select(sc, root, str(model), cfg.space)
    (g,) = sel.groups()
    t0 = time.perf_counter()
    bold = prepare(g, cache, sc.data.trim_start)
    fit = fitting(sc, g, budget_mod.memory_budget(cfg.memory_gb))
    lm, tok = load_pretrained(g.model_folder)
    feats = word_feats(lm, tok, g, sc.features, cache / "features")
    x = layer_design(feats, g, layer, sc.features, sc.data.trim_start)
    prep_s = time.perf_counter() - t0
    f = fit.fits(bold)
    width = max(1, min(bold.n_vertices, cfg.peer_targets // f))
    y = np.asarray(bold.chunk(0, width, fit.runs, fit.per_subject)).reshape(bold.n_rows, -1)   # (N, F * width)
    ok = np.isfinite(y).all(0)
    times = {}
    for name in ("assocjax", "himalaya", "assocjax"):  # ours twice: the first call compiles
        t = time.perf_counter()
        if name == "assocjax":
            got = solve_layer(x, bold, fit, vertices=(0, width))
            jax.block_until_ready(got["r_folds"])
            ours = got["r_folds"].reshape(len(fit.folds.outer), -1)
        else:
            peer = himalaya_brain_score(x, np.where(ok, y, 0.0).astype(np.float32), fit.folds, fit.alphas,
                                        backend=cfg.peer_backend, targets_batch=cfg.peer_batch)
        times.setdefault(name, []).append(time.perf_counter() - t)
    n_t = f * width
    dr = np.abs(np.nanmean(ours, 0) - np.nanmean(peer["r_folds"], 0))[ok]
    out = dict(layer=layer, targets=n_t, fits=f, vertices=width, rows=int(bold.n_rows), design_columns=int(x.shape[1]),
               outer_folds=len(fit.folds.outer), alphas=len(fit.alphas), prepare_s=round(prep_s, 1),
               assocjax_s=[round(v, 2) for v in times["assocjax"]], himalaya_s=round(times["himalaya"][0], 2),
               assocjax_us_per_target=round(1e6 * times["assocjax"][-1] / n_t, 1),
               himalaya_us_per_target=round(1e6 * times["himalaya"][0] / n_t, 1),
               ratio=round(times["himalaya"][0] / times["assocjax"][-1], 2),
               max_abs_dr=float(np.nanmax(dr)), median_abs_dr=float(np.nanmedian(dr)),
               himalaya_batch=cfg.peer_batch, himalaya_backend=cfg.peer_backend, devices=[str(d) for d in jax.devices()],
               load_avg=_machine()["load_avg"])
    print(f"peer slice: {n_t} targets ({f} fits x {width} vertices), layer {layer}: assocjax "
          f"{out['assocjax_s'][-1]} s, himalaya {out['himalaya_s']} s -> himalaya/assocjax = {out['ratio']}x; "
          f"max |dr| {out['max_abs_dr']:.2g}", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def main(cfg: Config, extra: list[str]) -> dict | None:
    cfg.work.mkdir(parents=True, exist_ok=True)
    print(f"work folder (inputs, model, runs): {cfg.work.resolve()} (--work)", flush=True)
    root, gen = ensure_dataset(cfg)
    print(f"dataset: {root} (generated in {gen['wall_s']} s, peak RSS {gen['peak_rss_gib']} GiB, "
          f"{gen['bytes_gib']} GiB on disk, {gen['n_scans']} scans)", flush=True)
    model = ensure_model(cfg)
    if cfg.build_only:
        return None
    record = run_score(cfg, root, model, shlex.split(cfg.extra) + extra)
    record["generation"] = {k: gen[k] for k in ("wall_s", "peak_rss_gib", "max_rss_gib", "bytes_gib", "n_scans")}
    if cfg.peer_targets and record["returncode"] == 0:
        record["peer_layer"] = cfg.layers[0] if cfg.layers else 9
        record["peer"] = himalaya_side_by_side(cfg, root, model, record)
        Path(record["folder"], "record.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    if cfg.peer_targets and not cfg.keep_cache:
        shutil.rmtree(Path(record["folder"]) / "cache", ignore_errors=True)
    line = json.dumps(record, default=str)
    print(json.dumps(record, indent=1, default=str))
    if cfg.record is not None:
        with open(cfg.record, "a") as f:
            f.write(line + "\n")
    if record["returncode"] != 0:
        sys.exit(record["returncode"])
    return record


if __name__ == "__main__":
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    main(tyro.cli(Config, args=argv[:cut]), argv[cut + 1:])
