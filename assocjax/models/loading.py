"""Load Hugging Face checkpoints (config.json + safetensors, single or sharded) from a
local folder — or, when asked explicitly (hub=True) and online, a hub name — into a
`CausalLM` and its tokenizer. `check_weights` checks a folder from its headers alone; a
tensor holding NaN or Inf is refused while loading, naming it and its file.

Memory: the parameters are built one leaf at a time directly on the device in the target
dtype: a stacked per-layer leaf is allocated there once and each layer's tensor is read
from its file, sent to the device and written into it in place (a donated update that
also transposes and casts), so the host holds one tensor at a time and the peak is about
the model's size in the target dtype plus one tensor: no float32 copy of a bfloat16
model, and no whole host copy beside the device copy.
"""
from __future__ import annotations

import json
import re
import struct
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from .config import ModelConfig
from .modeling import CausalLM
from .params import nest, param_shapes, weight_plan
from .registry import from_hf

_ALIGN = 64  # bytes; XLA's CPU client aliases host arrays aligned like this instead of copying them
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_FLOATS = ("F64", "F32", "F16", "BF16")  # weight dtypes (integer tensors would be quantized weights: refused)


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor table, byte offset of the data) of one .safetensors file, checked against
    the file's size before any tensor is read: a truncated or random-bytes file is a
    ValueError naming the file and the expected and actual byte counts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file ({size} bytes; its header length alone takes 8)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ValueError(f"{path}: not a safetensors file, or truncated: its header would take {n} bytes, "
                             f"the file has {size - 8} after the 8-byte length")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    header.pop("__metadata__", None)
    data = size - 8 - n
    needed = max([_tensor_end(path, name, info) for name, info in header.items()], default=0)
    if needed > data:
        raise ValueError(f"{path}: truncated: its header needs {8 + n + needed} bytes (tensor data up to there), "
                         f"the file has {size}")
    return header, 8 + n


def _tensor_end(path: Path, name: str, info) -> int:
    """End of one tensor's bytes in the data section, after checking its header entry."""
    try:
        dtype, shape, (start, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        ok = isinstance(start, int) and isinstance(end, int) and 0 <= start <= end and min(shape, default=0) >= 0
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: corrupt safetensors header entry for tensor {name}: {info!r}")
    if dtype in _DTYPES and end - start != np.dtype(_DTYPES[dtype]).itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{path}: tensor {name} has {end - start} bytes for shape {shape} {dtype}")
    return end


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

    def info(self, name: str) -> tuple[Path, tuple[int, ...], str]:
        """(file, shape, safetensors dtype such as "BF16") of a tensor, from the header."""
        path, info, _ = self.where[name]
        return path, tuple(info["shape"]), info["dtype"]

    def __call__(self, name: str) -> np.ndarray:
        path, info, offset = self.where[name]
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]  # consistent with the shape and the file size (read_safetensors_header)
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
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index}: field 'weight_map' must map tensor names to shard file names")
        return [folder / s for s in sorted(set(weight_map.values()))]
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                            "(only safetensors checkpoints are supported)")


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return from_hf(_read_json(path), str(path))


def _read_json(path: Path) -> dict:
    """A JSON object from a file; ValueError naming the file when it is not one."""
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found a {type(value).__name__}")
    return value


def resolve(path: str | Path, hub: bool = False) -> Path:
    """The local folder of a model. `path` is a local folder; a relative path that does not
    exist is an error, never a hub lookup. With hub=True a path that is not there and has
    the form of a Hugging Face hub name ("org/name") is downloaded (needs network)."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise NotADirectoryError(f"model path {folder} is not a folder")
        return folder
    if hub and is_hub_name(str(path)):
        return _download(str(path))
    hint = ("; hub names are downloaded only when allowed explicitly (hub=True; finetune.py --hub, score.py "
            "--model.hub)") if is_hub_name(str(path)) and not hub else ""
    raise FileNotFoundError(f"model folder not found: {folder.absolute()}{hint}")


def is_hub_name(path: str) -> bool:
    """Whether `path` has the form of a hub repository id: "org/name", no leading "." "/" "~"."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) is not None and ".." not in path


def check_weights(folder: str | Path) -> ModelConfig:
    """Check a model folder from its headers alone, before any long work: config.json (valid
    JSON, a supported model, fields of the right types), each safetensors file's header
    (complete, its tensors inside the file) and every tensor the config needs (name, shape,
    a floating dtype); missing or unexpected tensors are listed. Reads no tensor data.
    Returns the config; raises ValueError / FileNotFoundError naming the file."""
    folder = Path(folder)
    cfg = read_config(folder)
    reader = SafetensorsReader(weight_files(folder))
    _check_tensors(cfg, reader, str(folder))
    return cfg


def _check_tensors(cfg: ModelConfig, reader, source: str) -> dict:
    """weight_plan(...) after checking each tensor's shape and dtype in the headers."""
    plan = weight_plan(cfg, reader.names(), source)
    shapes = param_shapes(cfg)
    for path, leaf in plan.items():
        want = _node(shapes, path)
        per_tensor = want[1:] if leaf.stacked else want
        for name in leaf.names:
            file, shape, dtype = reader.info(name)
            got = shape[::-1] if leaf.transform == "transpose" else shape
            if got != tuple(per_tensor):
                raise ValueError(f"{file}: tensor {name} of shape {shape} where the config needs "
                                 f"{tuple(per_tensor[::-1]) if leaf.transform == 'transpose' else tuple(per_tensor)}")
            if dtype not in _FLOATS:
                raise ValueError(f"{file}: tensor {name} has dtype {dtype}; weights must be one of {', '.join(_FLOATS)}")
    return plan


def _node(tree: dict, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


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


_CHECK_CHUNK = 1 << 22  # elements per step of the finite check: bounded temporaries (a few MiB)


def _count_non_finite(a: np.ndarray) -> int:
    """NaN and Inf values of a host tensor, from their exponent bits (all set), a chunk at a
    time: no float32 copy of a bfloat16 tensor, no temporary of the tensor's size, nothing
    compiled (a jitted check per tensor shape raised the load's peak memory by ~100 MiB)."""
    info = np.finfo(a.dtype)
    uint = np.dtype(f"u{a.dtype.itemsize}")
    exponent = uint.type(((1 << info.nexp) - 1) << info.nmant)
    bits = a.reshape(-1).view(uint)
    return sum(int(np.count_nonzero((bits[i:i + _CHECK_CHUNK] & exponent) == exponent))
               for i in range(0, bits.size, _CHECK_CHUNK))


def _check_finite(a: np.ndarray, name: str, reader) -> None:
    """A tensor holding NaN or Inf (a diverged or damaged model) is an error naming it and its
    file: its features, and every score made from them, would be NaN. Checked on each tensor
    as it is read for loading (a separate scan of the files before loading would read a 7B
    model's 13 GB twice)."""
    bad = _count_non_finite(a)
    if bad:
        raise ValueError(f"{reader.info(name)[0]}: tensor {name} holds {bad} non-finite value(s) (NaN or Inf) of "
                         f"{a.size}: a diverged or damaged model; its scores would be NaN")


def load_params(cfg: ModelConfig, reader, dtype, source: str) -> dict:
    """Our parameter tree on the default device in `dtype`, built leaf by leaf from
    `reader(name)` tensors (module docstring: about one tensor beyond the model's size),
    after checking every tensor's name, shape and dtype in the headers (`check_weights`);
    a tensor with NaN or Inf values is refused as it is read (`_check_finite`).
    Conversions happen on the device: exact for bfloat16 -> float32 and float16 -> float32,
    round-to-nearest-even for float32 -> bfloat16 (as numpy / ml_dtypes casts)."""
    shapes = param_shapes(cfg)
    out = {}
    for path, leaf in _check_tensors(cfg, reader, source).items():
        want = tuple(_node(shapes, path))
        transpose = leaf.transform == "transpose"
        if leaf.stacked:
            value = jnp.zeros(want, dtype)
        for i, name in enumerate(leaf.names):
            host = reader(name)
            _check_finite(host, name, reader)
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


def load_pretrained(path: str | Path, dtype=jnp.float32, tokenizer: bool = True, hub: bool = False):
    """(model, tokenizer) from a local Hugging Face folder, or with hub=True a hub name
    (downloaded; needs network), see `resolve`.

    Reads config.json, model.safetensors or a sharded model.safetensors.index.json, and
    the tokenizer files of the same folder (transformers AutoTokenizer; tokenizer=False
    skips it and returns None). dtype: jnp.float32 or jnp.bfloat16; weights are converted
    to it leaf by leaf on the device (`load_params`), never through a float32 copy.
    """
    folder = resolve(path, hub)
    cfg = read_config(folder)
    reader = SafetensorsReader(weight_files(folder))
    model = build_model(cfg, load_params(cfg, reader, dtype, str(folder)), dtype)
    return model, (load_tokenizer(folder) if tokenizer else None)


# the tokenizer files that are JSON (whichever of them the folder has)
TOKENIZER_JSON = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                  "added_tokens.json")


def load_tokenizer(folder: Path):
    """transformers AutoTokenizer of a local folder; a damaged file is a ValueError naming it.
    The folder's JSON files are parsed first because the `tokenizers` library reports a
    malformed one as a bare Exception ("Error while initializing BPE") without its name."""
    for name in TOKENIZER_JSON:
        if (folder / name).is_file():
            _read_json(folder / name)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{folder}: no usable tokenizer files ({e})") from None
    except Exception as e:  # noqa: BLE001  (the Rust tokenizers library raises plain Exception)
        raise ValueError(f"{folder}: its tokenizer files could not be read ({type(e).__name__}: {e})") from None


def _download(repo_id: str) -> Path:
    """Hub checkpoints (needs network; not reachable from CI)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
