"""scripts/fetch.py without the internet: a local HTTP server in a thread plays OpenNeuro's S3
bucket (ListObjectsV2 listing with pagination, GET with Range) over a synthetic dataset made
from the real Narratives metadata (pieman with its run-1/run-2 listeners, bronx). The plan is
exactly the files the run reads (the fetched folder scores the same as the source); the faults
(a dropped connection, a 404, a size that disagrees with the listing, a wrong MD5, a killed
download, an unreachable server) behave as docs/data.md says; --dry-run on the real metadata."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from assocjax.cli import run_cli
from assocjax.data import load_dataset
from assocjax.data.fetch import FetchError, Source, datalad_get, download, fetch_all, Remote
from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from assocjax.pipeline import DataOptions
from assocjax.pipeline.fetch_plan import FetchConfig, fetch, plan
from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
NARRATIVES = SHARED / "narratives"
pytestmark = pytest.mark.skipif(not NARRATIVES.is_dir(), reason="shared Narratives metadata not available")
PREFIX = "ds002345"
SPACE = "tinysphere"


class Bucket(http.server.ThreadingHTTPServer):
    """Files of `folder` at /bucket/ds002345/<path>; `virtual` adds listed-only sizes; faults by path."""

    daemon_threads = True
    request_queue_size = 64  # 8 parallel connects overflow the default backlog of 5 (a 1 s SYN retry each)

    def __init__(self, folder: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.folder, self.virtual = folder, {}
        self.drop_once, self.missing, self.lie, self.bad_md5, self.slow = set(), set(), {}, set(), set()
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of every ranged GET
        self.page = 7  # keys per listing page: the client must follow continuation tokens
        self.url = f"http://127.0.0.1:{self.server_address[1]}/bucket/{PREFIX}"

    def objects(self, prefix: str) -> list[tuple[str, int, str]]:
        out = [o for o in self.files() if o[0].startswith(prefix)]
        out += [(path, size, "0" * 32 + "-2") for path, size in self.virtual.items()]  # a multipart ETag: no MD5
        out = [(p, self.lie.get(p, s), "f" * 32 if p in self.bad_md5 else m) for p, s, m in out]
        return sorted(o for o in out if o[0].startswith(prefix))

    def files(self) -> list[tuple[str, int, str]]:
        """(path, size, MD5) of the folder's files, read once per folder."""
        if getattr(self, "_files", (None,))[0] != self.folder:
            files = sorted(p for p in self.folder.rglob("*") if p.is_file())
            self._files = (self.folder, [(p.relative_to(self.folder).as_posix(), p.stat().st_size,
                                          hashlib.md5(p.read_bytes()).hexdigest()) for p in files])
        return self._files[1]


class Handler(http.server.BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go as separate writes: no delayed-ACK stalls

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/bucket":
            return self.listing(urllib.parse.parse_qs(url.query))
        path = urllib.parse.unquote(url.path[len(f"/bucket/{PREFIX}/"):])
        file = self.server.folder / path
        if path in self.server.missing or not file.is_file():
            return self.send_error(404)
        data = file.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            self.server.ranges.append((path, rng))
            start = int(rng.split("=")[1].split("-")[0])
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if path in self.server.drop_once:  # half the file, then the connection goes
            self.server.drop_once.discard(path)
            self.wfile.write(body[: len(data) // 2 - start])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        step = 2048 if path in self.server.slow else len(body) or 1
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                if path in self.server.slow:
                    self.wfile.flush()
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, interrupted)
            pass

    def listing(self, q):
        prefix = q["prefix"][0][len(PREFIX) + 1:]
        objects = self.server.objects(prefix)
        start = int(q.get("continuation-token", ["0"])[0])
        page = objects[start:start + self.server.page]
        more = start + self.server.page < len(objects)
        items = "".join(f"<Contents><Key>{escape(PREFIX + '/' + p)}</Key><Size>{s}</Size><ETag>&quot;{m}&quot;</ETag>"
                        "</Contents>" for p, s, m in page)
        token = f"<NextContinuationToken>{start + self.server.page}</NextContinuationToken>" if more else ""
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{items}{token}</ListBucketResult>").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fetch")
    make_synthetic(SyntheticConfig(out=tmp / "src", from_metadata=NARRATIVES, stories=("pieman", "bronx"),
                                   n_subjects=3, space=SPACE, n_vertices=40, feature_dim=4))
    return tmp


@pytest.fixture
def bucket(world):
    server = Bucket(world / "src")
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def config(root: Path, bucket: Bucket, **kw) -> FetchConfig:
    return FetchConfig(data=DataOptions(root=root, tasks=("pieman", "bronx"), space=SPACE), base_url=bucket.url,
                       progress=False, **kw)


def read_scans_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_fetch_is_exactly_what_the_run_reads(world, bucket, tmp_path):
    """Every listener's files and nothing else: pieman's listeners heard it in run-1 (their run-2
    is not read), the other files of the source (manifest, participants.json) are not read either."""
    assert fetch(config(tmp_path / "dst", bucket), out=lambda s: None) == 0
    got = read_scans_of(tmp_path / "dst")
    src = read_scans_of(world / "src")
    assert got < src
    assert {p for p in src - got if "run-2" not in p} == {"associations.json", "manifest.json", "participants.json"}
    assert all((tmp_path / "dst" / p).read_bytes() == (world / "src" / p).read_bytes() for p in got)
    assert "derivatives/freesurfer/tinysphere/label/lh.synthetic.annot" in got
    # the fetched folder is a dataset on its own: the same scans, stories and listeners
    a, b = load_dataset(tmp_path / "dst"), load_dataset(world / "src")
    assert {(s.stem, s.stories) for s in a.all_scans} <= {(s.stem, s.stories) for s in b.all_scans}
    # a rerun finds everything complete and downloads nothing
    lines = []
    assert fetch(config(tmp_path / "dst", bucket), out=lines.append) == 0
    assert any("fetched 0, already complete" in line for line in lines)


def test_dropped_connection_resumes_with_range(world, bucket, tmp_path):
    image = "derivatives/afni-nosmooth/sub-127/func/sub-127_task-bronx_space-tinysphere_hemi-L_desc-clean.func.gii"
    bucket.drop_once.add(image)
    lines = []
    assert fetch(config(tmp_path, bucket, retries=0), out=lines.append) == 1
    assert any(line.startswith("failed: ") and image in line for line in lines)
    size = (world / "src" / image).stat().st_size
    assert not (tmp_path / image).exists()
    assert (tmp_path / (image + ".part")).stat().st_size == size // 2
    assert fetch(config(tmp_path, bucket, retries=0), out=lines.append) == 0
    assert bucket.ranges == [(image, f"bytes={size // 2}-")]
    assert (tmp_path / image).read_bytes() == (world / "src" / image).read_bytes()
    assert not (tmp_path / (image + ".part")).exists()


def test_dropped_connection_resumes_within_a_run(world, bucket, tmp_path):
    image = "derivatives/afni-nosmooth/sub-265/func/sub-265_task-bronx_space-tinysphere_hemi-R_desc-clean.func.gii"
    bucket.drop_once.add(image)
    assert fetch(config(tmp_path, bucket, retries=1), out=lambda s: None) == 0
    assert [p for p, _ in bucket.ranges] == [image]
    assert (tmp_path / image).read_bytes() == (world / "src" / image).read_bytes()


def test_a_404_is_named_and_the_rest_complete(world, bucket, tmp_path):
    image = "derivatives/afni-nosmooth/sub-003/func/sub-003_task-pieman_run-1_space-tinysphere_hemi-R_desc-clean.func.gii"
    bucket.missing.add(image)
    lines = []
    assert fetch(config(tmp_path, bucket), out=lines.append) == 1
    failed = [line for line in lines if line.startswith("failed: ")]
    assert len(failed) == 1 and image in failed[0] and "HTTP 404" in failed[0]
    assert not (tmp_path / image).exists() and not (tmp_path / (image + ".part")).exists()
    bucket.missing.clear()
    assert fetch(config(tmp_path, bucket), out=lines.append) == 0
    assert (tmp_path / image).read_bytes() == (world / "src" / image).read_bytes()
    assert not any(p.endswith(".part") for p in read_scans_of(tmp_path))


@pytest.mark.parametrize("fault", ["size", "md5"])
def test_a_file_that_disagrees_with_the_listing_is_refused(world, bucket, tmp_path, fault):
    image = "derivatives/afni-nosmooth/sub-267/func/sub-267_task-bronx_space-tinysphere_hemi-L_desc-clean.func.gii"
    size = (world / "src" / image).stat().st_size
    if fault == "size":
        bucket.lie[image] = size + 10
    else:
        bucket.bad_md5.add(image)
    lines = []
    assert fetch(config(tmp_path, bucket), out=lines.append) == 1
    failed = [line for line in lines if line.startswith("failed: ")]
    assert len(failed) == 1 and image in failed[0] and "refused" in failed[0]
    assert ("the listing says" in failed[0]) if fault == "size" else ("MD5" in failed[0])
    assert not (tmp_path / image).exists() and not (tmp_path / (image + ".part")).exists()


def test_a_killed_download_completes_on_rerun(world, bucket, tmp_path):
    image = "derivatives/afni-nosmooth/sub-002/func/sub-002_task-pieman_run-1_space-tinysphere_hemi-L_desc-clean.func.gii"
    bucket.slow.add(image)
    part = tmp_path / (image + ".part")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "fetch.py"), "--data.root", str(tmp_path),
                             "--data.tasks", "pieman", "bronx", "--data.space", SPACE, "--base-url", bucket.url,
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (part.is_file() and part.stat().st_size > 0) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    size = (world / "src" / image).stat().st_size
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert 0 < part.stat().st_size < size and not (tmp_path / image).exists()
    bucket.slow.clear()
    assert fetch(config(tmp_path, bucket), out=lambda s: None) == 0
    assert (tmp_path / image).read_bytes() == (world / "src" / image).read_bytes()
    assert any(p == image for p, _ in bucket.ranges)


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path, capsys):
    code = run_cli(fetch, FetchConfig, argv=["--data.root", str(tmp_path), "--base-url", "http://127.0.0.1:9/b/ds",
                                            "--dry-run"], errors=(FetchError,))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot reach http://127.0.0.1:9/b") and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs 0 must be >= 1"), (["--retries", "-1"], "--retries -1 must be >= 0"),
    ([], "--data.root: give the folder to fetch the dataset into")])
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    root = [] if not argv else ["--data.root", str(tmp_path)]
    assert run_cli(fetch, FetchConfig, argv=root + argv, errors=(FetchError,)) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_disk_space_is_checked_before_starting(world, bucket, tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(FetchError, match=r"still to download into .*but its disk has only 1000 B \(1000 bytes\) free"):
        fetch(config(tmp_path, bucket), out=lambda s: None)
    assert not any(tmp_path.rglob("*.gii*"))


def test_a_local_copy_is_a_source(world, tmp_path):
    """file:// (a lab mirror on a shared disk): the same plan, sizes from the files."""
    src = Source.local(world / "src")
    dst = tmp_path / "dst"
    result = fetch_all(src, [Remote("stimuli/gentle/pieman/align.csv", 5), ], dst, progress=False)
    assert "refused" in result.failed["stimuli/gentle/pieman/align.csv"]  # 5 bytes listed: not that file
    cfg = FetchConfig(data=DataOptions(root=dst, tasks=("bronx",), space=SPACE), base_url=src.base_url, progress=False)
    assert fetch(cfg, out=lambda s: None) == 0
    assert (dst / "stimuli/gentle/bronx/align.csv").read_bytes() == (world / "src/stimuli/gentle/bronx/align.csv").read_bytes()


def test_a_volume_plan_has_the_nifti_its_mask_and_the_datasets_atlas(tmp_path):
    make_synthetic(SyntheticConfig(out=tmp_path / "src", from_metadata=NARRATIVES, stories=("bronx",), n_subjects=2,
                                   space=SPACE, n_vertices=20, feature_dim=4, volume_shape=(5, 5, 5), ho_atlas=True))
    d = DataOptions(root=tmp_path / "dst", tasks=("bronx",), space="MNI152NLin2009cAsym")
    p = plan(d, tmp_path / "src", Source.local(tmp_path / "src"))
    paths = [f.path for f in p.files]
    for sub in p.listeners["bronx"]:
        stem = f"{sub}/func/{sub}_task-bronx_space-MNI152NLin2009cAsym"
        assert f"derivatives/afni-nosmooth/{stem}_res-native_desc-clean_bold.nii.gz" in paths
        assert f"derivatives/fmriprep/{stem}_desc-brain_mask.nii.gz" in paths  # afni's own folder has none
    atlas = [x for x in paths if x.startswith("derivatives/atlases/")]
    assert len(atlas) == 2 and atlas[0].endswith("_dseg.nii.gz") and atlas[1].endswith((".tsv", ".txt")), atlas
    assert not any(".func.gii" in x or "freesurfer" in x for x in paths)
    assert not any("Harvard-Oxford" in n for n in p.notes)
    (tmp_path / "src" / atlas[0]).unlink()
    (tmp_path / "src" / atlas[1]).unlink()
    p = plan(d, tmp_path / "src", Source.local(tmp_path / "src"))
    assert not any(f.path.startswith("derivatives/atlases/") for f in p.files)
    assert any("Harvard-Oxford atlas of a volume run is not part of Narratives" in n for n in p.notes)


def test_a_server_that_ignores_range_restarts_from_zero(world, tmp_path):
    path = "stimuli/gentle/pieman/align.csv"
    data = (world / "src" / path).read_bytes()

    class NoRange(Source):
        def open(self, p, start):
            return open(world / "src" / p, "rb"), 0, len(data)

    (tmp_path / "stimuli/gentle/pieman").mkdir(parents=True)
    (tmp_path / (path + ".part")).write_bytes(b"x" * 100)  # not a prefix of the file: must be rewritten
    got = []
    download(NoRange.local(world / "src"), Remote(path, len(data), hashlib.md5(data).hexdigest()), tmp_path / path,
             got.append)
    assert (tmp_path / path).read_bytes() == data and sum(got) == len(data) - 100


def test_ctrl_c_stops_every_transfer_and_keeps_the_parts(world, bucket, tmp_path):
    """An interrupt (here raised by one download) stops the others at their next chunk, starts no
    more, and propagates; the slow file's .part stays for the rerun, nothing is under its name."""
    slow = "derivatives/afni-nosmooth/sub-004/func/sub-004_task-pieman_run-1_space-tinysphere_hemi-L_desc-clean.func.gii"
    bucket.slow.add(slow)

    class Interrupted(Source):
        def open(self, path, start):
            if path == "stimuli/gentle/pieman/align.csv":
                time.sleep(0.3)  # the slow file is under way by then
                raise KeyboardInterrupt
            return super().open(path, start)

    source = Interrupted(bucket.url)
    files = [source.stat(slow), source.stat("stimuli/gentle/pieman/align.csv")] + \
        [r for p, r in source.list("derivatives/afni-nosmooth/sub-1").items()]
    t = time.time()
    with pytest.raises(KeyboardInterrupt):
        fetch_all(source, files, tmp_path, jobs=2, progress=False)
    assert time.time() - t < 2  # the slow file alone takes ~2.5 s
    part = tmp_path / (slow + ".part")
    assert 0 < part.stat().st_size < files[0].size and not (tmp_path / slow).exists()
    # none of the files queued behind them completes (one may have been picked up as the interrupt came)
    assert not [p for p in tmp_path.rglob("sub-1*") if p.is_file() and not p.name.endswith(".part")]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    download(Source.local(tmp_path), Remote("empty", 0, hashlib.md5(b"").hexdigest()), tmp_path / "copy" / "empty")
    assert (tmp_path / "copy" / "empty").read_bytes() == b""


def test_datalad_gets_exactly_the_planned_paths(tmp_path, monkeypatch):
    import shutil as sh

    monkeypatch.setattr(sh, "which", lambda name: None)
    with pytest.raises(FetchError, match="datalad command is not on PATH"):
        datalad_get(tmp_path, ["a"])
    monkeypatch.setattr(sh, "which", lambda name: "/usr/bin/datalad")
    with pytest.raises(FetchError, match=r"not an installed DataLad dataset; install it first with `datalad clone"):
        datalad_get(tmp_path, ["a"])
    (tmp_path / ".datalad").mkdir()
    calls = []

    def run(cmd, cwd):
        calls.append((cmd, cwd))
        return subprocess.CompletedProcess(cmd, 1 if len(calls) == 2 else 0)

    paths = [f"sub-{i:03d}/func/x.func.gii" for i in range(5)]
    assert datalad_get(tmp_path, paths, jobs=3, run=run, batch=2) == 1
    assert [c[0][7:] for c in calls] == [paths[0:2], paths[2:4], paths[4:]]
    assert calls[0][0][:7] == ["datalad", "get", "-d", str(tmp_path), "-J", "3", "--"] and calls[0][1] == tmp_path
    # in a clone, a file not yet got is a dangling symlink into the annex: the plan sees it, sized from its key
    image = tmp_path / "derivatives/afni-nosmooth/sub-001/func/x.func.gii"
    image.parent.mkdir(parents=True)
    image.symlink_to("../../../../.git/annex/objects/Xx/Yy/MD5E-s49153024--0123456789abcdef.func.gii/MD5E-s49153024"
                     "--0123456789abcdef.func.gii")
    assert Source.local(tmp_path, annex=True).list("derivatives/") == {
        "derivatives/afni-nosmooth/sub-001/func/x.func.gii": Remote("derivatives/afni-nosmooth/sub-001/func/x.func.gii",
                                                                    49153024)}
    assert Source.local(tmp_path).list("derivatives/") == {}  # a plain copy: a dangling link is no file


def real_listing(bucket: Bucket, gii_bytes) -> None:
    """The bucket's listing of the real dataset: the plain-text files with their real sizes, and
    an afni-nosmooth fsaverage6 image per scan and hemisphere of `gii_bytes(scan)` bytes."""
    bucket.folder = NARRATIVES
    for scan in load_dataset(NARRATIVES).all_scans:
        for h in "LR":
            bucket.virtual[f"derivatives/afni-nosmooth/{scan.subject}/func/{scan.stem}_space-fsaverage6_hemi-{h}"
                           "_desc-clean.func.gii"] = gii_bytes(scan)
    bucket.virtual["stimuli/gentle/pieman/transcript.txt"] = 5_000  # in the release, not in ../shared
    for h in "LR":
        bucket.virtual[f"derivatives/afni-nosmooth/tpl-fsaverage6/tpl-fsaverage6_hemi-{h}_desc-MMP_dseg.label.gii"] = \
            40962 * 4 + 20_000


def test_dry_run_on_the_real_metadata_lists_piemans_files(bucket, tmp_path):
    """fsaverage6 afni-nosmooth pieman: 2 images per listener (L, R), the alignment, the MMP atlas.
    Image sizes: 40962 vertices x the scan's TRs (to its last story's end) x 4 bytes + 20 kB of header."""
    real_listing(bucket, lambda scan: 40962 * scan.n_trs_needed * 4 + 20_000)
    lines = []
    cfg = FetchConfig(data=DataOptions(root=tmp_path / "dst", tasks=("pieman",), space="fsaverage6"),
                      base_url=bucket.url, metadata=NARRATIVES, dry_run=True, progress=False)
    assert fetch(cfg, out=lines.append) == 0
    assert not (tmp_path / "dst").exists()  # a dry run writes nothing
    d = DataOptions(root=tmp_path / "dst", tasks=("pieman",), space="fsaverage6")
    p = plan(d, NARRATIVES, Source(bucket.url))
    listeners = p.listeners["pieman"]
    images = [f for f in p.files if f.path.endswith(".func.gii") and "/func/" in f.path]
    assert len(images) == 2 * len(listeners) and len(listeners) > 70
    paths = {f.path for f in p.files}
    assert {"participants.tsv", "dataset_description.json", "code/scan_exclude.json", "stimuli/gentle/pieman/align.csv",
            "stimuli/gentle/pieman/transcript.txt",
            "derivatives/afni-nosmooth/tpl-fsaverage6/tpl-fsaverage6_hemi-L_desc-MMP_dseg.label.gii"} <= paths
    assert not any("piemanpni" in x for x in paths)
    total = [line for line in lines if " files, " in line][0]
    assert f"{len(p.files)} files" in total and f"({p.total:,d} bytes)" in total
    print(total, json.dumps({"listeners": len(listeners), "images": len(images)}))


def test_dry_run_stages_the_metadata_from_the_server(bucket, tmp_path):
    """Without --metadata: the candidate subjects' sidecars and events come from the listing
    (piemanpni's, whose task name begins like pieman's, are not taken) and give the same plan."""
    real_listing(bucket, lambda scan: 1000)
    d = DataOptions(root=tmp_path / "dst", tasks=("pieman",), space="fsaverage6")
    from assocjax.pipeline.fetch_plan import stage_metadata

    staged = stage_metadata(d, Source(bucket.url), tmp_path / "meta")
    assert list(staged.glob("sub-*/func/*_task-pieman_*")) and not list(staged.glob("sub-*/func/*piemanpni*"))
    assert plan(d, staged, Source(bucket.url)).files == plan(d, NARRATIVES, Source(bucket.url)).files


@pytest.mark.slow
def test_the_fetched_folder_scores_as_the_source(world, bucket, tmp_path):
    """score.py on the fetched folder gives the source run's tables exactly (one layer of a tiny GPT-2)."""
    from assocjax.pipeline import FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, score
    from test_stories import gpt2_with_real_tokenizer

    assert fetch(config(tmp_path / "dst", bucket), out=lambda s: None) == 0
    model = gpt2_with_real_tokenizer(tmp_path / "model")

    def run(root: Path, name: str) -> Path:
        score(ScoreConfig(output=tmp_path / name, cache_dir=tmp_path / f"cache-{name}", progress=False,
                          data=DataOptions(root=root, tasks=("pieman", "bronx"), space=SPACE),
                          model=ModelOptions(path=str(model)), features=FeatureOptions(context=256, layers=(1,)),
                          report=ReportOptions(figures=False, n_boot=200)))
        return tmp_path / name

    a, b = run(world / "src", "source"), run(tmp_path / "dst", "fetched")
    tables = sorted(p.name for p in a.glob("*.csv"))
    assert "scores.csv" in tables and tables == sorted(p.name for p in b.glob("*.csv"))
    assert b"pieman" in (a / "scores.csv").read_bytes() and b"bronx" in (a / "scores.csv").read_bytes()
    for name in tables:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
