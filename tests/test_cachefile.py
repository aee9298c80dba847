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
