"""The one registry of architecture families: `arch` / config.json `model_type` -> `Family`.

Adding a family is its folder (see `models.family`) and one line in FAMILIES.
"""
from __future__ import annotations

from . import gpt2, gpt_neox, llama
from .config import Fields, ModelConfig
from .family import Family

FAMILIES: tuple[Family, ...] = (
    gpt2.FAMILY,
    llama.FAMILY,
    gpt_neox.FAMILY,
)

_BY_NAME = {f.name: f for f in FAMILIES}
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
SUPPORTED = tuple(_BY_MODEL_TYPE)  # the config.json model_type values we read


def family(arch: str | ModelConfig) -> Family:
    """The family of a config (or of its `arch` name)."""
    name = arch.arch if isinstance(arch, ModelConfig) else arch
    if name not in _BY_NAME:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def from_hf(cfg: dict, source: str = "config.json") -> ModelConfig:
    """Translate a Hugging Face config dict through its family's mapping; `source` names it
    in error messages, which name the offending field (missing, of the wrong type, or out of
    range)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a JSON object, found a {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED)}")
    fam = _BY_MODEL_TYPE[model_type]
    out = fam.config(Fields(cfg, source, model_type))
    if out.arch != fam.name:  # a family's mapping must name its own family: dispatch reads cfg.arch
        raise ValueError(f"{source}: the {fam.name} config mapping returned arch {out.arch!r}")
    return out
