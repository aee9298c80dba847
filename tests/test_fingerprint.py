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


def test_the_hashes_stored_in_files_keep_their_values():
    """Augmentation files, checkpoints and feature caches store these digests: the values main
    computed with hand-written sha256/blake2b calls before they moved into fingerprint.py."""
    from assocjax.augment import format as fmt
    from assocjax.stimuli import Reading
    from assocjax.tune.checkpoint import data_hash

    words = ["Hello,", "wörld", "again"]
    assert fmt.story_hash(words) == "8657b415a3c0a7daa85629e9f9cca082ecd30152237e4fedd8651893bdec52ab"
    aug = fmt.Augmentation("toy", fmt.story_hash(words), 3, (fmt.Insertion(1, "doctor, nurse", "word", "manual"),),
                           {"seed": 1})
    assert aug.id == "2e95f8a513f9ef4c"
    assert Reading.from_words(words).id == "376642681a212e2d1784c6174a99ece7b971aa9532c4f5a36a765cc7acf4b285"
    assert data_hash([dict(id="a", instruction="i", input="x", output="ü")]) == "92d59854f2569359"
    assert fingerprint.text_seed("pieman") == 9260704876532254466  # seeds the synthetic data's streams
    assert fingerprint.text_digest("ü", 8) == hashlib.sha256("ü".encode()).hexdigest()[:8]
    assert fingerprint.bytes_digest([b"ab", b"c"]) == hashlib.sha256(b"abc").hexdigest()


def test_the_package_hashes_only_through_fingerprint():
    package = Path(fingerprint.__file__).parent
    imports = ("import hashlib", "from hashlib")
    hashing = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if any(line.strip().startswith(imports) for line in p.read_text().splitlines()))
    assert hashing == ["fingerprint.py"]
