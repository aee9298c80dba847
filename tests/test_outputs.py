"""Output folders (`assocjax.outputs`): one run at a time, a run's files appear together or not at
all (a full disk included), a rerun removes only files the tool recorded, and the one
policy for a file the user names. The score.py cases are in test_pipeline.py."""
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assocjax.cli import EXIT_USER_ERROR, run_cli
from assocjax.outputs import (LOCK_FILE, MANIFEST_FILE, STAGING_PREFIX, OutputError, OutputFolder, check_folder,
                              check_new_file)

REPO = Path(__file__).resolve().parents[1]


def write_run(folder: Path, files: dict[str, str]) -> OutputFolder:
    """One run of the tool writing `files` (relative path -> text) into `folder`."""
    with OutputFolder(folder) as out, out.staging() as stage:
        for rel, text in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text(text)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_replaces_its_own_files_and_keeps_a_users(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"scores.csv": "old", "maps/layer-001.gii": "1", "maps/layer-002.gii": "2"})
    (out / "maps" / "poster.png").write_text("the user's")
    (out / "notes.txt").write_text("the user's too")
    done = write_run(out, {"scores.csv": "new", "maps/layer-001.gii": "1 again"})
    assert done.written == [out / "maps/layer-001.gii", out / "scores.csv"]
    assert (out / "scores.csv").read_text() == "new" and not (out / "maps" / "layer-002.gii").exists()
    assert (out / "maps" / "poster.png").read_text() == "the user's" and (out / "notes.txt").is_file()
    assert json.loads((out / MANIFEST_FILE).read_text())["files"] == ["maps/layer-001.gii", "scores.csv"]
    assert not list(out.glob(STAGING_PREFIX + "*"))


def test_a_users_file_at_an_outputs_place_is_kept_as_a_backup(tmp_path):
    """A file the manifest does not list where a new output goes (a user's hand-made train.jsonl)
    is renamed to a free .orig name, never over an earlier backup, with a warning naming both."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("the user's")
    (out / "train.jsonl.orig").write_text("an older backup")
    with pytest.warns(UserWarning, match=f"{out / 'train.jsonl'} was not written by this tool .*: kept as "
                                         f"{out / 'train.jsonl.orig-2'}"):
        write_run(out, {"train.jsonl": "new"})
    assert snapshot(out) | {MANIFEST_FILE: b""} == {"train.jsonl": b"new", "train.jsonl.orig": b"an older backup",
                                                    "train.jsonl.orig-2": b"the user's", MANIFEST_FILE: b"",
                                                    LOCK_FILE: (out / LOCK_FILE).read_bytes()}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tool's own file (in the manifest) is replaced without a word
        write_run(out, {"train.jsonl": "newer"})
    assert (out / "train.jsonl").read_text() == "newer" and (out / "train.jsonl.orig-2").read_text() == "the user's"


def test_a_manifest_never_reaches_outside_the_folder(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "precious.txt"
    outside.write_text("keep")
    write_run(out, {"a.txt": "a"})
    (out / MANIFEST_FILE).write_text(json.dumps(dict(format="assocjax-outputs", version=1,
                                                     files=["a.txt", "../precious.txt", str(outside)])))
    write_run(out, {"b.txt": "b"})
    assert outside.read_text() == "keep" and not (out / "a.txt").exists()


def test_unreadable_manifest_removes_nothing_with_a_warning(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.txt": "a"})
    (out / MANIFEST_FILE).write_text("{broken")
    with pytest.warns(UserWarning, match=f"{MANIFEST_FILE} is not an assocjax-outputs manifest"):
        write_run(out, {"b.txt": "b"})
    assert (out / "a.txt").is_file() and (out / "b.txt").is_file()


def test_a_second_run_fails_at_once_naming_the_folder_and_the_pid(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out):
        with pytest.raises(OutputError, match=rf"--output {out} is in use by another run \(process {os.getpid()}\)"):
            with OutputFolder(out):
                pass
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    write_run(out, {"a.txt": "a"})  # released when the block ends


def test_a_killed_run_neither_blocks_the_next_nor_leaves_its_staging_folder(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from assocjax.outputs import OutputFolder\n"
            "with OutputFolder(sys.argv[1]) as out, out.staging() as stage:\n"
            "    (stage / 'half.txt').write_text('x'); print('ready', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(OutputError, match=f"process {proc.pid}"):
            OutputFolder(out).__enter__()
    finally:
        proc.kill()
        proc.wait()
    assert list(out.glob(STAGING_PREFIX + "*"))  # what the killed run left...
    write_run(out, {"a.txt": "a"})
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, MANIFEST_FILE, "a.txt"])  # ...is gone


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])  # EFBIG: a file-size limit, as the probe's full disk
def test_disk_full_while_writing_keeps_the_old_outputs_byte_identical(tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    write_run(out, {"scores.csv": "old", "run.json": "{}", "maps/m.gii": "old map"})
    before = snapshot(out)
    real_fsync, calls = os.fsync, []

    def fsync_then_full(fd):  # the second file of the rerun hits a full disk
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    from assocjax.io import atomic_write_text
    with pytest.raises(OutputError, match=f"--output {out}: no space left on its disk.*previous outputs are unchanged"):
        with OutputFolder(out) as folder, folder.staging() as stage:
            for rel in ("scores.csv", "run.json", "maps/m.gii"):
                atomic_write_text(stage / rel, "new")
    assert snapshot(out) == before and not list(out.glob(STAGING_PREFIX + "*"))


def test_an_error_in_the_block_changes_nothing_and_a_new_folder_is_not_left(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.txt": "a"})
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="bug"), OutputFolder(out) as folder, folder.staging() as stage:
        (stage / "a.txt").write_text("half")
        raise RuntimeError("bug")
    assert snapshot(out) == before
    fresh = tmp_path / "deep" / "fresh"
    with pytest.raises(ValueError, match="bad input"), OutputFolder(fresh):
        raise ValueError("bad input")
    assert not fresh.exists()


def test_a_folder_in_the_way_of_an_output_is_refused_before_any_rename(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.txt": "a"})
    (out / "maps").write_text("a user's file named like the maps folder")
    before = snapshot(out)
    with pytest.raises(FileExistsError, match=r"maps is in the way of the output maps/m\.gii"):
        write_run(out, {"a.txt": "new", "maps/m.gii": "m"})
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["itself", "parent"])
def test_a_file_given_as_the_folder_is_one_line_naming_it(tmp_path, where):
    f = tmp_path / "results.csv"
    f.write_text("a user's table")
    folder = f if where == "itself" else f / "sub"
    with pytest.raises(NotADirectoryError, match=f"--out {folder}.*{f} exists and is not a folder"
                       if where == "parent" else f"--out {f} exists and is not a folder"):
        check_folder(folder, "--out")
    with pytest.raises(NotADirectoryError):
        OutputFolder(folder, "--out").__enter__()
    assert f.read_text() == "a user's table"


def test_new_file_policy(tmp_path):
    f = tmp_path / "aug.json"
    assert check_new_file(f, "--out", overwrite=False) == f
    f.write_text("hand-made")
    with pytest.raises(FileExistsError, match=f"--out {f} exists: pass --overwrite"):
        check_new_file(f, "--out", overwrite=False)
    assert check_new_file(f, "--out", overwrite=True) == f
    with pytest.raises(IsADirectoryError, match=f"--out {tmp_path} is a folder"):
        check_new_file(tmp_path, "--out", overwrite=True)
    with pytest.raises(NotADirectoryError, match=f"{f} exists and is not a folder"):
        check_new_file(f / "x.json", "--out", overwrite=False)


def test_cli_turns_a_busy_or_full_output_into_one_line(tmp_path, capsys):
    def main(_):
        raise OutputError("--output x is in use by another run (process 1)")

    assert run_cli(main, lambda argv: None, []) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: --output x is in use by another run (process 1)\n"


def _script(name: str, *argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, argv)], cwd=cwd, text=True,
                          capture_output=True, env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=300)


def test_scripts_refuse_a_file_as_output_folder_before_work(tmp_path):
    f = tmp_path / "taken"
    f.write_text("a user's file")
    t0 = time.perf_counter()
    for name, argv in [("demo.py", ["--output", f]), ("make_association.py", ["--stories", tmp_path, "--augmentations",
                                                                              tmp_path, "--out", f / "data"]),
                       ("augment.py", ["oracle", "--out-dir", f]),
                       ("finetune.py", ["--model", tmp_path, "--train", f, "--out", f / "run"])]:
        res = _script(name, *argv, cwd=tmp_path)
        assert res.returncode == EXIT_USER_ERROR, (name, res.stderr)
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, (name, res.stderr)
        assert f"{f} exists and is not a folder" in res.stderr, (name, res.stderr)
    assert f.read_text() == "a user's file"
    assert time.perf_counter() - t0 < 120  # four interpreter starts, no work
