"""The one chunked stream (`ridge.chunks`): chunk widths, the read-ahead order, padding and
trimming, and that nothing else in the package builds a device mesh or streams by itself."""
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from assocjax.ridge import chunks
from assocjax.ridge.chunks import Layout, chunk_layout, stream, targets_within

PACKAGE = Path(__file__).resolve().parents[1] / "assocjax"


def test_chunks_are_balanced_in_whole_tiles():
    # the default run's story: 18436 vertices x 11 fits, at most 65536 targets a chunk: 4 chunks
    # of 4609 vertices (50 tiles each), not 3 full ones and a mostly padded fourth (4 x 64 tiles)
    got = chunk_layout(18436, 65536, per_item=11, tile=1024)
    assert got == Layout(18436, 11, 4609, 51200, 1024)
    assert got.chunks() == [(0, 4609), (4609, 9218), (9218, 13827), (13827, 18436)]
    assert chunk_layout(10, 8192, tile=1024) == Layout(10, 1, 10, 10, None)  # narrow: no padding, one call
    assert chunk_layout(43, 20, n_devices=8) == Layout(43, 1, 15, 16, None)  # whole device shares


def test_every_device_holds_whole_tiles():
    """1500 targets on 8 devices: each device solves one 1024-column tile, as one device does, so
    a target's numbers do not depend on the device count (tests/test_pipeline_devices.py)."""
    assert chunk_layout(300, 4800, per_item=5, n_devices=8, tile=1024) == Layout(300, 5, 300, 8192, None)
    assert chunk_layout(300, 4800, per_item=5, n_devices=1, tile=1024) == Layout(300, 5, 300, 2048, 1024)


def test_targets_within_the_budget():
    assert targets_within(10_000, per_target=10, fixed=2_000) == 800
    assert targets_within(10_000, per_target=10, fixed=2_000, multiple=256) == 768  # whole tiles, below the budget
    assert targets_within(10_000, per_target=10, fixed=2_000, multiple=256, n_devices=4) == 4 * 768
    assert targets_within(10**12, per_target=1) == chunks.MAX_TARGETS
    with pytest.raises(ValueError, match="--memory-gb 0.1 .*too small"):
        targets_within(1_000, per_target=10, fixed=2_000, what="--memory-gb 0.1")


def test_the_next_chunk_is_read_before_this_one_is_fetched():
    y_NT = np.arange(2 * 10, dtype=np.float64).reshape(2, 10)
    log = []

    def read(a, b):
        log.append(f"read {a}")
        return y_NT[:, a:b]

    got = []
    for chunk, out in stream(lambda y: y * 2, read, chunk_layout(10, 4), dtype=np.float32):
        log.append(f"got {chunk.start}")
        assert out.dtype == np.float32 and out.shape == (2, 4)  # cast per chunk; padded to one shape
        got.append(out[:, :chunk.used])
    assert log == ["read 0", "read 4", "got 0", "read 8", "got 4", "got 8"]
    np.testing.assert_array_equal(np.concatenate(got, axis=1), 2 * y_NT)
    assert [c for c, _ in stream(lambda y: y, read, chunk_layout(10, 4))][-1] == (8, 10, 2)


def test_two_workers_keep_two_chunks_in_flight_and_yield_in_order():
    """workers=2: two chunks are read and solved at once (by two threads), never more, and the
    chunks come back in order with the same numbers as one worker."""
    import threading
    import time

    y_NT = np.arange(3 * 50, dtype=np.float64).reshape(3, 50)
    lock, live, most = threading.Lock(), [0], [0]

    def solve(y):
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        time.sleep(0.05)  # long enough for the other thread to start its chunk
        with lock:
            live[0] -= 1
        return y * 3

    layout = chunk_layout(50, 8)
    got = list(stream(solve, lambda a, b: y_NT[:, a:b], layout, dtype=np.float32, workers=2))
    one = list(stream(lambda y: y * 3, lambda a, b: y_NT[:, a:b], layout, dtype=np.float32))
    assert [c for c, _ in got] == [c for c, _ in one] == [chunks.Chunk(a, b, b - a) for a, b in layout.chunks()]
    assert most[0] == 2
    for (_, a), (_, b) in zip(got, one):
        np.testing.assert_array_equal(a, b)


def test_every_leaf_is_padded_on_its_target_axis():
    """A pytree of host and device leaves (weights (P, T), means (T,), targets (N, T)): each is
    padded with zero columns on its last axis."""
    w, mu, y = np.ones((3, 5), np.float32), np.ones(5, np.float32), jnp.ones((2, 5))
    shapes = [got for _, got in stream(
        lambda tree: [a.shape for a in tree], lambda a, b: (w[:, a:b], mu[a:b], y[:, a:b]), chunk_layout(5, 3))]
    assert shapes == [[(3, 3), (3,), (2, 3)]] * 2


def test_one_mesh_and_one_stream_in_the_package():
    """Only ridge/chunks.py builds a device mesh or a target sharding; the four loops that
    streamed targets by themselves (RidgeCV, brain_score, the pipeline's layers and ceiling) go
    through it."""
    makers = re.compile(r"\bMesh\(|PartitionSpec\(|NamedSharding\(")
    found = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if makers.search(p.read_text()))
    assert found == ["ridge/chunks.py"]
    for name in ("ridge/estimator.py", "ridge/streaming.py", "pipeline/fitting.py", "pipeline/store.py"):
        assert "chunks.stream(" in (PACKAGE / name).read_text(), name
