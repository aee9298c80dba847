"""Load Hugging Face checkpoints (config.json + safetensors, single or sharded) from a
local folder — or, when online, a hub name — into a `CausalLM` and its tokenizer.

Memory: the parameters are built one leaf at a time directly on the device in the target
dtype: a stacked per-layer leaf is allocated there once and each layer's tensor is read
from its file, sent to the device and written into it in place (a donated update that
also transposes and casts), so the host holds one tensor at a time and the peak is about
the model's size in the target dtype plus one tensor: no float32 copy of a bfloat16
model, and no whole host copy beside the device copy.
"""
from __future__ import annotations

import json
import struct
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from .config import ModelConfig, from_hf
from .modeling import CausalLM
from .params import nest, param_shapes, weight_plan

_ALIGN = 64  # bytes; XLA's CPU client aliases host arrays aligned like this instead of copying them
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
    """Tensor-by-tensor access to one or more .safetensors files (bfloat16 included, through
    ml_dtypes; no torch). Each call reads one tensor into a fresh array with a plain file
    read: pages of a long-lived memory map would stay resident in this process (and count
    in its peak memory) after the tensor has been sent to the device."""

    def __init__(self, files: list[Path]):
        self.where: dict[str, tuple[Path, dict, int]] = {}
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"weights file not found: {path}")
            header, offset = read_safetensors_header(path)
            for name, info in header.items():
                self.where[name] = (path, info, offset)

    def names(self) -> set[str]:
        return set(self.where)

    def __call__(self, name: str) -> np.ndarray:
        path, info, offset = self.where[name]
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]
        count = (end - start) // dtype.itemsize
        if count * dtype.itemsize != end - start or count != int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name} has {end - start} bytes for shape {info['shape']} {info['dtype']}")
        raw = np.empty(end - start + _ALIGN, np.uint8)
        buf = raw[(-raw.ctypes.data) % _ALIGN:][:end - start]  # aligned: `jax.device_put` can then use it in place on CPU
        with open(path, "rb") as f:
            f.seek(offset + start)
            if f.readinto(memoryview(buf)) != end - start:
                raise ValueError(f"{path}: file ends inside tensor {name} (truncated?)")
        return buf.view(dtype).reshape(info["shape"])


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
    """A CausalLM whose parameters are `params` (our tree), cast to dtype, no random init.
    Leaves that are already device arrays of `dtype` are used as they are (no copy)."""
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    graph, state = nnx.split(abstract)
    expected = nnx.to_pure_dict(state)["params"]
    cast = jax.tree.map(lambda spec, a: _checked(spec, a, dtype), expected, params)
    nnx.replace_by_pure_dict(state, {"params": cast})
    return nnx.merge(graph, state)


def _checked(spec, a, dtype):
    if tuple(a.shape) != tuple(spec.shape):
        raise ValueError(f"weight of shape {tuple(a.shape)} where the config needs {tuple(spec.shape)}")
    return jnp.asarray(a, dtype=dtype)


@partial(jax.jit, static_argnames=("dtype", "transpose"))
def _to_device(x, dtype, transpose: bool):
    return (jnp.swapaxes(x, -1, -2) if transpose else x).astype(dtype)


@partial(jax.jit, static_argnames=("transpose",), donate_argnums=0)
def _set_layer(stack, x, i, transpose: bool):
    """stack[i] = transform(x) cast to stack's dtype, in place (stack is donated)."""
    x = (jnp.swapaxes(x, -1, -2) if transpose else x).astype(stack.dtype)
    return jax.lax.dynamic_update_index_in_dim(stack, x, i, 0)


def load_params(cfg: ModelConfig, reader, dtype, source: str) -> dict:
    """Our parameter tree on the default device in `dtype`, built leaf by leaf from
    `reader(name)` tensors (module docstring: about one tensor beyond the model's size).
    Conversions happen on the device: exact for bfloat16 -> float32 and float16 -> float32,
    round-to-nearest-even for float32 -> bfloat16 (as numpy / ml_dtypes casts)."""
    shapes = param_shapes(cfg)
    out = {}
    for path, leaf in weight_plan(cfg, reader.names(), source).items():
        node = shapes
        for part in path.split("/"):
            node = node[part]
        want = tuple(node)
        transpose = leaf.transform == "transpose"
        per_tensor = want[1:] if leaf.stacked else want
        if leaf.stacked:
            value = jnp.zeros(want, dtype)
        for i, name in enumerate(leaf.names):
            host = reader(name)
            got = tuple(host.shape[::-1]) if transpose else tuple(host.shape)
            if got != per_tensor:
                raise ValueError(f"{source}: tensor {name} of shape {tuple(host.shape)} where the config needs "
                                 f"{per_tensor[::-1] if transpose else per_tensor}")
            x = jax.device_put(host)  # one tensor in the checkpoint's dtype (CPU: no copy at all)
            del host
            if leaf.stacked:
                value = _set_layer(value, x, i, transpose=transpose)
            else:
                value = x if (x.dtype == dtype and not transpose) else _to_device(x, dtype, transpose)
            # Dispatch is asynchronous: without waiting, the loop would read and send the next
            # tensors while earlier ones are still queued, holding several tensors at once.
            value.block_until_ready()
            del x
        out[path] = value
    return nest(out)


def load_pretrained(path: str | Path, dtype=jnp.float32, tokenizer: bool = True):
    """(model, tokenizer) from a local Hugging Face folder, or a hub name when online.

    Reads config.json, model.safetensors or a sharded model.safetensors.index.json, and
    the tokenizer files of the same folder (transformers AutoTokenizer; tokenizer=False
    skips it and returns None). dtype: jnp.float32 or jnp.bfloat16; weights are converted
    to it leaf by leaf on the device (`load_params`), never through a float32 copy.
    """
    folder = Path(path)
    if not folder.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")):
            folder = _download(str(path))
        else:
            raise FileNotFoundError(f"model folder not found: {folder}")
    cfg = read_config(folder)
    reader = SafetensorsReader(weight_files(folder))
    model = build_model(cfg, load_params(cfg, reader, dtype, str(folder)), dtype)
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
