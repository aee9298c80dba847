"""The one cache helper (assocjax.cachefile): a key with numpy values and paths matches itself
after the JSON round trip, an entry without a stamp is a silent miss, each kind of damage is
named, and each of the four caches recomputes a damaged entry through the one policy."""
import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from assocjax import cachefile
from assocjax.features import cache as feature_cache
from assocjax.pipeline import assets, bold, store
from assocjax.pipeline.config import SyntheticOptions

KIND = cachefile.Kind("things", version=1, what="cache file")


def test_keys_match_after_the_round_trip_and_damage_is_named(tmp_path):
    key = dict(n=np.int64(5), files=[Path("/a/b")], shape=(2, 3))  # as the BOLD and results keys hold
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    cachefile.write_bytes(a, b"0123456789", key)
    cachefile.write_bytes(b, b"abcdefghij", key | dict(n=6))
    assert cachefile.problem(a, key) is None
    assert cachefile.problem(a, key | dict(n=7)) == "its stamp is for another key (n: 5, wanted 7)"
    shutil.copy(b, a)
    assert "differ from the checksum" in cachefile.problem(a, key)
    a.write_bytes(b"0123")
    assert cachefile.problem(a, key) == "4 bytes, 10 when written (truncated or replaced)"
    cachefile.stamp_path(b).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unstamped file is an unfinished entry: a plain miss
        assert KIND.load(b, key | dict(n=6), Path.read_bytes) is None
    with pytest.warns(UserWarning, match=f"cache file {a}: 4 bytes, 10 when written .*; recomputing"):
        assert KIND.load(a, key, Path.read_bytes) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.stamp.json", "b.bin"]  # no temporaries


def test_the_version_is_part_of_the_key_and_so_of_the_name(tmp_path):
    """A bumped version never reads an old entry: its name differs (a plain miss), and a stamp
    for the old version copied onto the new name is another key."""
    key, newer = KIND.key(n=1), dataclasses.replace(KIND, version=2).key(n=1)
    assert key == dict(n=1, version=1) and KIND.entry(tmp_path, key) != KIND.entry(tmp_path, newer)
    assert len(KIND.entry(tmp_path, key, ".npy").name) == cachefile.NAME_DIGITS + 4
    with pytest.raises(ValueError, match="'version' is the kind's own field"):
        KIND.key(version=3)
    cachefile.write_bytes(KIND.entry(tmp_path, key), b"x", key)
    shutil.copy(cachefile.stamp_path(KIND.entry(tmp_path, key)), cachefile.stamp_path(KIND.entry(tmp_path, newer)))
    shutil.copy(KIND.entry(tmp_path, key), KIND.entry(tmp_path, newer))
    with pytest.warns(UserWarning, match=r"another key \(version: 1, wanted 2\); recomputing"):
        assert KIND.load(KIND.entry(tmp_path, newer), newer, Path.read_bytes) is None


def test_a_check_of_what_was_read_goes_through_the_same_policy(tmp_path):
    key = KIND.key(n=1)
    path = cachefile.write_bytes(KIND.entry(tmp_path, key), b"abc", key)
    assert KIND.load(path, key, Path.read_bytes, lambda got: None) == b"abc"
    with pytest.warns(UserWarning, match=f"cache file {path}: holds 3 bytes; recomputing"):
        assert KIND.load(path, key, Path.read_bytes, lambda got: f"holds {len(got)} bytes") is None


# Each cache writes and reads an entry as its module does: write(folder, monkeypatch) -> (the file to
# damage, load() -> the entry, or None: recompute). The built-in world is a folder: its load rebuilds.
def _features(folder, monkeypatch):
    key = feature_cache.CACHE.key(weights="w", reading="r")
    with feature_cache.writing(folder, key, (2, 3, 4)) as out:
        out[...] = 1.0
    return next(folder.glob("*.npy")), lambda: feature_cache.load(folder, key)


def _bold(folder, monkeypatch):
    key = bold.CACHE.key(story="s", files=[["/x.gii", 1, 2]])
    bold._save_block(folder, key, np.ones((5, 3), np.float32), has=np.ones(5, bool))
    return next(folder.glob("*.npy")), lambda: bold._load_block(folder, key, 3)


def _results(folder, monkeypatch):
    path = store.layer_path(folder, 2)
    store.save(path, **{f: np.zeros(3) for f in store.LAYER_FIELDS})
    return path, lambda: store.load_layer(folder, 2)


def _world(folder, monkeypatch):
    built = []

    def build(opts, out, feature_folder, progress):
        built.append(out)
        (out / "narratives").mkdir()
        (out / "narratives" / "manifest.json").write_text('{"n": 1}')

    monkeypatch.setattr(assets, "_build", build)
    assets.ensure_builtin(SyntheticOptions(), folder, progress=False)
    (world,) = (folder / "builtin").iterdir()
    return world / "narratives" / "manifest.json", lambda: assets.ensure_builtin(SyntheticOptions(), folder) and built


CACHES = {"features": (_features, feature_cache.CACHE), "bold": (_bold, bold.CACHE),
          "results": (_results, store.CACHE), "built-in world": (_world, assets.CACHE)}


def _flip_a_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["a byte flipped", "truncated"])
@pytest.mark.parametrize("cache", CACHES)
def test_each_cache_recomputes_a_damaged_entry_with_the_one_warning(tmp_path, monkeypatch, cache, damage):
    write, kind = CACHES[cache]
    victim, load = write(tmp_path, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load() is not None  # an intact entry is used, silently
        if cache == "built-in world":
            assert len(load()) == 1  # built once
    if damage == "a byte flipped":
        _flip_a_byte(victim)
        why = "its bytes differ from the checksum taken when it was written"
    else:
        victim.write_bytes(victim.read_bytes()[:7])
        why = "7 bytes, .* when written \\(truncated or replaced\\)"
    where = victim.parent.parent if cache == "built-in world" else victim
    with pytest.warns(UserWarning, match=f"^{kind.what} {where}: .*{why}.*; recomputing$"):
        got = load()
    if cache == "built-in world":
        assert len(got) == 2  # rebuilt
    else:
        assert got is None  # the caller recomputes and writes it again
        write(tmp_path, monkeypatch)
        assert load() is not None


def test_a_write_the_file_size_limit_cuts_short_is_a_refused_write_leaving_no_file(tmp_path):
    """A full disk as the hostile probe makes it (RLIMIT_FSIZE, in a process of its own): numpy's
    np.save reports the short write without an errno; it is the one-line refused write naming the
    cache folder, and neither the entry, its temporary file nor its stamp remains."""
    import subprocess
    import sys

    folder = tmp_path / "bold"
    folder.mkdir()
    code = f"""
import resource, signal
import numpy as np
from assocjax import cachefile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    with cachefile.writing({str(folder / 'x.npy')!r}, dict(n=1)) as tmp, open(tmp, "wb") as f:
        np.save(f, np.zeros(4000))
except OSError as e:
    print(type(e).__name__, e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.startswith("WriteRefusedError a write stopped short (") and out.stdout.rstrip().endswith(
        f"a full disk or a file-size limit): {folder}; free space or point --cache-dir elsewhere"), out
    assert list(folder.iterdir()) == []
