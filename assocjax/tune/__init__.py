"""Instruction tuning: the Association dataset, prompt formats, LoRA adapters (PEFT-compatible),
frozen-layer tuning, the tuning methods' table, the grouped training options, the training loop
and its Orbax checkpoints, cross-fitting by story."""
from .config import DataOptions, MethodOptions, OptimOptions, ScheduleOptions, TrainConfig
from .dataset import (CONTROL_TEMPLATES, TASKS, TEMPLATES, build_records, read_jsonl, split_by_story, validate_record,
                      write_jsonl)
from .freeze import FrozenOptions, frozen_params, join, ordered_runs, parse_layers, split_trainable
from .lora import DEFAULT_TARGETS, TARGETS, LoraConfig, init_adapters, lora_inputs, merge
from .methods import METHODS, Method
from .peft import load_peft, save_peft
from .prompts import encode, encode_all
from .train import TrainResult, save_hf_model, save_peft_adapters, train, tuned_params, write_outputs

__all__ = ["TEMPLATES", "CONTROL_TEMPLATES", "TASKS", "build_records", "split_by_story", "validate_record", "read_jsonl",
           "write_jsonl", "encode", "encode_all", "TrainConfig", "MethodOptions", "OptimOptions", "ScheduleOptions",
           "DataOptions", "FrozenOptions", "METHODS", "Method", "TrainResult", "train", "tuned_params", "save_hf_model",
           "save_peft_adapters", "write_outputs", "TARGETS", "DEFAULT_TARGETS", "LoraConfig", "init_adapters",
           "lora_inputs", "merge", "parse_layers", "split_trainable", "join", "ordered_runs", "frozen_params",
           "save_peft", "load_peft"]
