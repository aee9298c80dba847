"""assocjax.fingerprint: the digests caches are keyed by keep their meaning, and the weight
fingerprints see every change they are meant to see."""
import hashlib
import json
import types
from pathlib import Path

import numpy as np

from assocjax import fingerprint


def test_digest_is_the_sorted_json_sha256_caches_were_keyed_by():
    key = dict(version=2, files=[["/x/a.gii", 10, 123]], story="pieman", mask_from=None, nested={"b": 1, "a": 2.5})
    full = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    assert fingerprint.digest(key) == full and fingerprint.digest(key, 24) == full[:24]
    assert fingerprint.digest(dict(reversed(list(key.items())))) == full  # key order does not matter
    # values JSON cannot write are written as their str (the results key holds paths)
    assert fingerprint.digest({"p": "/tmp/x"}) == fingerprint.digest({"p": Path("/tmp/x")})


def test_file_stats(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"12345")
    b.write_bytes(b"")
    got = fingerprint.file_stats([b, str(a)])
    assert got == [[str(b), 0, b.stat().st_mtime_ns], [str(a), 5, a.stat().st_mtime_ns]]


def _model(params, cfg="cfg"):
    return types.SimpleNamespace(cfg=cfg, param_tree=lambda: params)


def test_weight_fingerprints_change_with_any_weight_and_the_config():
    rng = np.random.default_rng(0)
    params = {"wte": rng.normal(size=(50, 8)).astype(np.float32), "h": {"w": rng.normal(size=(8, 8)).astype(np.float32)}}
    moved = {"wte": params["wte"], "h": {"w": params["h"]["w"].copy()}}
    moved["h"]["w"][3, 5] += 1e-3
    full, sampled = fingerprint.weights_id(_model(params)), fingerprint.sampled_weights_id(params)
    assert len(full) == 64 and len(sampled) == 16
    assert fingerprint.weights_id(_model(moved)) != full
    assert fingerprint.weights_id(_model(params, cfg="other")) != full
    assert fingerprint.sampled_weights_id(moved) != sampled  # small leaves are sampled entirely
    assert fingerprint.weights_id(_model({k: params[k] for k in ("h", "wte")})) == full  # leaf order is canonical
