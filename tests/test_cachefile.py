"""The stamp every cached file carries (assocjax.cachefile): a key with numpy values and
paths matches itself after the JSON round trip, an entry without a stamp is a silent miss,
and each kind of damage is named."""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from assocjax import cachefile


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
        assert not cachefile.usable(b, key | dict(n=6), "cache file")
    with pytest.warns(UserWarning, match=f"cache file {a}: 4 bytes, 10 when written .*; recomputing"):
        assert not cachefile.usable(a, key, "cache file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.stamp.json", "b.bin"]  # no temporaries


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
