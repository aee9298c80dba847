"""Load Hugging Face checkpoints (config.json + safetensors, single or sharded) from a
local folder — or, when online, a hub name — into a `CausalLM` and its tokenizer."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from .config import ModelConfig, from_hf
from .modeling import CausalLM
from .params import params_from_hf

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor table, byte offset of the data) of one .safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class SafetensorsReader:
    """Lazy, memory-mapped access to the tensors of one or more .safetensors files
    (bfloat16 included, through ml_dtypes; no torch)."""

    def __init__(self, files: list[Path]):
        self.where: dict[str, tuple[Path, dict, int]] = {}
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {path}")
            header, offset = read_safetensors_header(path)
            for name, info in header.items():
                self.where[name] = (path, info, offset)
        self._maps: dict[Path, np.memmap] = {}

    def names(self) -> set[str]:
        return set(self.where)

    def __call__(self, name: str) -> np.ndarray:
        path, info, offset = self.where[name]
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        start, end = info["data_offsets"]
        buf = self._maps[path][offset + start: offset + end]
        return buf.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                            "(only safetensors checkpoints are supported)")


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return from_hf(json.loads(path.read_text()), str(path))


def build_model(cfg: ModelConfig, params: dict, dtype=jnp.float32) -> CausalLM:
    """A CausalLM whose parameters are `params` (our tree), cast to dtype, no random init."""
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    graph, state = nnx.split(abstract)
    expected = nnx.to_pure_dict(state)["params"]
    cast = jax.tree.map(lambda spec, a: _checked(spec, a, dtype), expected, params)
    nnx.replace_by_pure_dict(state, {"params": cast})
    return nnx.merge(graph, state)


def _checked(spec, a, dtype):
    if tuple(a.shape) != tuple(spec.shape):
        raise ValueError(f"weight of shape {tuple(a.shape)} where the config needs {tuple(spec.shape)}")
    return jnp.asarray(np.asarray(a).astype(np.float32) if a.dtype == ml_dtypes.bfloat16 and dtype != jnp.bfloat16 else a,
                       dtype=dtype)


def load_pretrained(path: str | Path, dtype=jnp.float32, tokenizer: bool = True):
    """(model, tokenizer) from a local Hugging Face folder, or a hub name when online.

    Reads config.json, model.safetensors or a sharded model.safetensors.index.json, and
    the tokenizer files of the same folder (transformers AutoTokenizer; tokenizer=False
    skips it and returns None). dtype: jnp.float32 or jnp.bfloat16.
    """
    folder = Path(path)
    if not folder.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")):
            folder = _download(str(path))
        else:
            raise FileNotFoundError(f"model folder not found: {folder}")
    cfg = read_config(folder)
    reader = SafetensorsReader(weight_files(folder))
    params = params_from_hf(cfg, reader.names(), reader, str(folder))
    model = build_model(cfg, params, dtype)
    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{folder}: no usable tokenizer files ({e})") from None
    return model, tok


def _download(repo_id: str) -> Path:
    """Hub checkpoints (needs network; not reachable from CI)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
