"""One frozen, hashable config for every supported decoder (hashable so it can be a static
argument of jitted functions), and `Fields`, the typed reads of a Hugging Face config.json
that each family's config mapping is written with (`registry.from_hf` picks the family)."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The shapes and settings every family reads; a family that needs more subclasses this in
    its folder (see `models.family`)."""

    arch: str  # the family's name (`registry.family(cfg)`)
    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    max_positions: int
    norm_eps: float
    tie_embeddings: bool
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 1.0  # "linear" RoPE scaling; 1 = none

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads


_REQUIRED = object()


class Fields:
    """Typed reads of config.json fields; a missing (or null) field takes the default, a
    bad one is a ValueError naming the file and the field."""

    def __init__(self, cfg: dict, source: str, model_type: str):
        self.cfg, self.source, self.model_type = cfg, source, model_type

    def get(self, key: str, default=_REQUIRED):
        value = self.cfg.get(key)
        if value is None:
            if default is _REQUIRED:
                raise ValueError(f"{self.source}: missing field {key!r} for model_type {self.model_type!r}")
            return default
        return value

    def error(self, key: str, what: str) -> ValueError:
        return ValueError(f"{self.source}: field {key!r} {what}; got {self.cfg.get(key)!r}")

    def int(self, key: str, default=_REQUIRED) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(key, "must be a positive integer")
        return value

    def float(self, key: str, default=_REQUIRED) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.error(key, "must be a positive number")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def dict(self, key: str) -> dict:
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be an object")
        return value

    def divides(self, key: str, value: int, by_key: str, by: int) -> None:
        if value % by:
            raise ValueError(f"{self.source}: {key}={value} is not a multiple of {by_key}={by}")
