"""Export and import LoRA adapters in Hugging Face PEFT's format.

A PEFT adapter folder holds adapter_config.json and adapter_model.safetensors with one
(r, in) lora_A and one (out, r) lora_B matrix per adapted module, e.g.
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` (LLaMA) or
`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight` (GPT-2); ours are the
transposes, stacked over layers. GPT-2's attention and MLP output projections are both
called c_proj, so when only one of them is adapted target_modules is a full-name regex
(PEFT matches a string with re.fullmatch) that names exactly the chosen modules.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import safetensors.numpy

from assocjax.io import atomic_folder, atomic_write_bytes, atomic_write_text
from assocjax.models.config import ModelConfig
from assocjax.models.loading import SafetensorsReader
from assocjax.models.registry import family

from .lora import LoraConfig, target_shapes

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
WRAPPER = "base_model.model."  # PEFT's prefix before the Hugging Face model's own module names
# PEFT options whose non-default values change the maths: refused on load instead of ignored
UNSUPPORTED = {"use_dora": False, "use_rslora": False, "lora_bias": False, "rank_pattern": {}, "alpha_pattern": {},
               "modules_to_save": None, "layer_replication": None, "trainable_token_indices": None,
               "target_parameters": None}


def block_prefix(cfg: ModelConfig) -> str:
    """The blocks' prefix in PEFT's tensor names ("base_model.model.transformer.h")."""
    return WRAPPER + family(cfg).peft_blocks


def _short(module: str) -> str:
    return module.split(".")[-1]


def _target_modules(cfg: ModelConfig, targets: tuple[str, ...]) -> list[str] | str:
    """PEFT's target_modules for our targets: the short module names when they name exactly
    the chosen modules, else a full-name regex (GPT-2's attention and MLP output projections
    are both c_proj)."""
    fam = family(cfg)
    hf = [fam.peft_modules[t] for t in targets]
    names = [_short(m) for m in hf]
    others = {_short(m) for t, m in fam.peft_modules.items() if t not in targets}
    if len(set(names)) == len(names) and not others & set(names):
        return sorted(names)  # unambiguous short names, as PEFT users write them
    blocks = re.escape(_short(fam.peft_blocks))
    return rf".*\.{blocks}\.\d+\.(" + "|".join(re.escape(m) for m in sorted(hf)) + ")"


def adapter_config(cfg: ModelConfig, lora: LoraConfig, base_model_name_or_path: str) -> dict:
    lora = lora.for_model(cfg)
    alpha = int(lora.alpha) if float(lora.alpha).is_integer() else lora.alpha
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_model_name_or_path),
        "r": lora.rank, "lora_alpha": alpha, "lora_dropout": lora.dropout,
        "target_modules": _target_modules(cfg, lora.targets), "bias": "none",
        "fan_in_fan_out": family(cfg).fan_in_fan_out,  # weights stored (in, out), as GPT-2's Conv1D
        "inference_mode": True, "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
        **UNSUPPORTED,
    }


def _tensors(cfg: ModelConfig, adapters: dict, lora: LoraConfig) -> dict[str, np.ndarray]:
    shapes = target_shapes(cfg, lora)
    modules = family(cfg).peft_modules
    out = {}
    for t, (d_in, d_out) in shapes.items():
        a = np.asarray(adapters["layers"][f"{t}_lora_a"], dtype=np.float32)
        b = np.asarray(adapters["layers"][f"{t}_lora_b"], dtype=np.float32)
        want_a, want_b = (cfg.n_layers, d_in, lora.rank), (cfg.n_layers, lora.rank, d_out)
        if a.shape != want_a or b.shape != want_b:
            raise ValueError(f"adapters for {t!r} have shapes {a.shape} / {b.shape}; the {cfg.arch} config and "
                             f"rank {lora.rank} need {want_a} / {want_b}")
        for i in range(cfg.n_layers):
            stem = f"{block_prefix(cfg)}.{i}.{modules[t]}"
            out[f"{stem}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
            out[f"{stem}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
    return out


def save_peft(folder, cfg: ModelConfig, adapters: dict, lora: LoraConfig, base_model_name_or_path: str) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (float32) into folder, loadable
    with peft.PeftModel.from_pretrained(base_model, folder). A new folder appears complete
    or not at all (written as a temporary sibling, then renamed); into an existing folder
    each file is replaced atomically, the weights first."""
    folder = Path(folder)
    weights = safetensors.numpy.save(_tensors(cfg, adapters, lora), metadata={"format": "pt"})
    config = json.dumps(adapter_config(cfg, lora, base_model_name_or_path), indent=2, sort_keys=True) + "\n"
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder")
        atomic_write_bytes(folder / WEIGHTS_FILE, weights)
        atomic_write_text(folder / CONFIG_FILE, config)
        return folder
    with atomic_folder(folder) as tmp:
        atomic_write_bytes(tmp / WEIGHTS_FILE, weights)
        atomic_write_text(tmp / CONFIG_FILE, config)
    return folder


def load_peft(folder, cfg: ModelConfig) -> tuple[dict, LoraConfig]:
    """(adapters, LoraConfig) from a PEFT LoRA folder for a model of config cfg. Targets come
    from the weights present; layers an adapter leaves out (layers_to_transform) get zero
    A and B, which adds nothing, exactly as in PEFT."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"PEFT adapter file not found: {p}")
    try:
        conf = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    if conf.get("peft_type") != "LORA":
        raise ValueError(f"{config_path}: peft_type {conf.get('peft_type')!r} is not supported (LORA only)")
    for key, default in UNSUPPORTED.items():
        if conf.get(key, default) not in (default, None, {}, [], False):
            raise ValueError(f"{config_path}: {key}={conf[key]!r} is not supported")
    if conf.get("bias", "none") != "none":
        raise ValueError(f"{config_path}: bias={conf['bias']!r} is not supported (none only)")
    for key in ("r", "lora_alpha"):
        if key not in conf:
            raise ValueError(f"{config_path}: missing field {key!r}")
    rank = int(conf["r"])

    fam = family(cfg)
    modules = {m: t for t, m in fam.peft_modules.items()}
    pattern = re.compile(rf"^{re.escape(block_prefix(cfg))}\.(\d+)\.(\w+\.\w+)\.lora_([AB])(?:\.default)?\.weight$")
    reader = SafetensorsReader([weights_path])
    found: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    bad = []
    for name in sorted(reader.names()):
        m = pattern.match(name)
        if not m or m.group(2) not in modules or int(m.group(1)) >= cfg.n_layers:
            bad.append(name)
            continue
        found.setdefault((modules[m.group(2)], m.group(3)), {})[int(m.group(1))] = np.asarray(reader(name), np.float32)
    if bad:
        raise ValueError(f"{weights_path}: tensors that are no LoRA weight of this {cfg.arch} model "
                         f"({cfg.n_layers} layers): {bad[:10]}{' ...' if len(bad) > 10 else ''}")
    targets = tuple(t for t in fam.lora_targets if (t, "A") in found or (t, "B") in found)
    if not targets:
        raise ValueError(f"{weights_path}: no LoRA weights found")
    lora = LoraConfig(rank=rank, alpha=float(conf["lora_alpha"]), dropout=float(conf.get("lora_dropout", 0.0)),
                      targets=targets)
    layers = {}
    for t, (d_in, d_out) in target_shapes(cfg, lora).items():
        for end, ours, shape in (("A", "a", (rank, d_in)), ("B", "b", (d_out, rank))):
            rows = found.get((t, end), {})
            stacked = np.zeros((cfg.n_layers, *shape[::-1]), np.float32)
            for i, w in rows.items():
                if w.shape != shape:
                    raise ValueError(f"{weights_path}: layer {i} {fam.peft_modules[t]}.lora_{end} has shape "
                                     f"{w.shape}; r={rank} and the model config need {shape}")
                stacked[i] = w.T
            layers[f"{t}_lora_{ours}"] = stacked
    return {"layers": layers}, lora
