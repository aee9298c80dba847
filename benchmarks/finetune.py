"""LoRA fine-tuning step (forward + backward + AdamW update of the adapters): assocjax
(one jit-compiled step, optax.adamw) vs transformers + PEFT (PyTorch, torch.optim.AdamW
over the adapter parameters), same random LLaMA-style weights, same adapters, same
tokens, same process; steps alternate between the two so machine noise hits both.

    python benchmarks/finetune.py --out outputs/bench/finetune.json
    python benchmarks/finetune.py --steps 2 --seq 128 --out /tmp/f.json     # quick check

The loss is next-token cross-entropy over every position (transformers' labels=ids).
Adapters: rank 8, alpha 16, dropout 0, targets q, k, v, o, gate, up, down (both sides).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import tyro
from transformers import AutoModelForCausalLM, LlamaConfig

from assocjax.models import load_pretrained
from assocjax.models.modeling import forward_logits
from assocjax.io import write_json
from assocjax.tune import LoraConfig, init_adapters, lora_inputs, save_peft
from common import matmul_gflops, torch_matmul_gflops


@dataclasses.dataclass
class Config:
    out: Path = Path("outputs/bench/finetune.json")  # results as JSON
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    kv_heads: int = 12
    intermediate: int = 2048
    vocab: int = 32000
    batch: int = 4
    seq: int = 512
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    warmup: int = 3          # untimed steps each (PyTorch's first ones are slow too)
    steps: int = 5           # timed steps each
    block: int = 1           # consecutive steps per turn: 1 alternates step by step; larger blocks keep each
                             # library's memory warm (a torch step frees GBs that the next XLA step faults in again)
    torch_threads: int = 2
    seed: int = 0


HF_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
            "down": "down_proj"}


def step_flops(cfg, lora: LoraConfig, batch: int, seq: int) -> dict:
    """Multiply-adds x 2 of one training step. Forward: every weight product, the LoRA
    products, the head and attention over the full S x S square (what PyTorch computes;
    assocjax skips most of the masked triangle, so this overstates its work). Backward:
    input gradients of every product (same cost as the forward), weight gradients of the
    adapters only, attention's backward = 2 x its forward."""
    d, t = cfg.hidden, batch * seq
    qd, kvd, f = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.intermediate
    shapes = {"q": (d, qd), "k": (d, kvd), "v": (d, kvd), "o": (qd, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
    base = sum(i * o for i, o in shapes.values()) * cfg.n_layers
    adapters = sum(lora.rank * (shapes[x][0] + shapes[x][1]) for x in lora.targets) * cfg.n_layers
    head = cfg.vocab_size * d
    attn = 2 * seq * qd * cfg.n_layers  # per token: QK^T and PV
    fwd = 2 * t * (base + adapters + head + attn)
    bwd = 2 * t * (base + adapters + head + 2 * attn) + 2 * t * adapters
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "adapter_params": adapters,
            "base_params": base + 2 * head}


def cross_entropy(logits_BSV, ids_BS):
    """Mean next-token cross-entropy (position s predicts token s + 1), as transformers'
    labels=ids: the labels are shifted instead of the logits, and the last position is
    masked, so the (B, S, V) logits are never copied."""
    labels = jnp.roll(ids_BS, -1, axis=1)
    weight = (jnp.arange(ids_BS.shape[1]) < ids_BS.shape[1] - 1).astype(jnp.float32)
    gold = jnp.take_along_axis(logits_BSV, labels[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits_BSV, axis=-1) - gold
    return jnp.sum(nll * weight) / (ids_BS.shape[0] * (ids_BS.shape[1] - 1))


def make_jax_step(cfg, lora: LoraConfig, opt):
    @partial(jax.jit, donate_argnums=(0, 1))
    def step(adapters, opt_state, params, ids_BS):
        # The base tree is an argument of the step but not of the differentiated function:
        # no weight gradient is formed for it.
        def loss_fn(ad):
            return cross_entropy(forward_logits(cfg, params, ids_BS, lora=lora_inputs(params, ad, lora)), ids_BS)

        loss, grads = jax.value_and_grad(loss_fn)(adapters)
        updates, opt_state = opt.update(grads, opt_state, adapters)
        return optax.apply_updates(adapters, updates), opt_state, loss

    return step


def weight_gradient_shapes(jaxpr, tokens: int) -> list[tuple[int, ...]]:
    """Result shapes of every weight-gradient product in a jaxpr (nested scans included):
    dot_generals that contract the leading (token) axes of both operands, `tokens` =
    batch x sequence elements in all, without batch dimensions, i.e. x^T @ dy."""
    out = []
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            (lc, rc), (lb, _) = e.params["dimension_numbers"]
            shape = e.invars[0].aval.shape
            leading = tuple(range(len(lc)))
            if not lb and tuple(sorted(lc)) == leading == tuple(sorted(rc)) and np.prod([shape[i] for i in lc]) == tokens:
                out.append(tuple(e.outvars[0].aval.shape))
        for v in e.params.values():
            for x in v if isinstance(v, (tuple, list)) else (v,):
                if hasattr(x, "jaxpr") and hasattr(x, "consts"):
                    out += weight_gradient_shapes(x.jaxpr, tokens)
                elif type(x).__name__ == "Jaxpr":
                    out += weight_gradient_shapes(x, tokens)
    return out


def main(c: Config):
    load_start = os.getloadavg()
    torch.set_num_threads(c.torch_threads)
    torch.manual_seed(c.seed)
    lora = LoraConfig(rank=c.rank, alpha=c.alpha, dropout=0.0, targets=c.targets)
    hf_cfg = LlamaConfig(hidden_size=c.hidden, intermediate_size=c.intermediate, num_hidden_layers=c.layers,
                         num_attention_heads=c.heads, num_key_value_heads=c.kv_heads, vocab_size=c.vocab,
                         max_position_embeddings=max(2048, c.seq), tie_word_embeddings=False)
    ids = np.random.default_rng(c.seed).integers(0, c.vocab, (c.batch, c.seq))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        AutoModelForCausalLM.from_config(hf_cfg).save_pretrained(tmp / "base")
        model, _ = load_pretrained(tmp / "base", tokenizer=False)
        cfg, params = model.cfg, model.param_tree()
        del model
        # Nonzero B (a trained adapter), so every adapter gradient is nonzero from the first step.
        adapters = init_adapters(cfg, lora, jax.random.key(c.seed))
        rng = np.random.default_rng(c.seed + 1)
        adapters = {"layers": {n: (jnp.asarray(0.01 * rng.normal(size=a.shape), jnp.float32) if n.endswith("_b")
                                   else a) for n, a in adapters["layers"].items()}}
        save_peft(tmp / "adapter", cfg, adapters, lora, str(tmp / "base"))
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(tmp / "base", dtype=torch.float32)
        t_model = PeftModel.from_pretrained(base, tmp / "adapter", is_trainable=True).train()
    t_params = [p for p in t_model.parameters() if p.requires_grad]
    n_adapter = sum(p.numel() for p in t_params)
    t_opt = torch.optim.AdamW(t_params, lr=1e-4, weight_decay=0.01)
    t_ids = torch.tensor(ids)

    def torch_step():
        t_opt.zero_grad(set_to_none=True)
        loss = t_model(input_ids=t_ids, labels=t_ids).loss
        loss.backward()
        t_opt.step()
        return loss.item()

    opt = optax.adamw(1e-4, weight_decay=0.01)
    step = make_jax_step(cfg, lora, opt)
    j_ids = jnp.asarray(ids)
    state = {"ad": adapters, "opt": opt.init(adapters)}
    t0 = time.perf_counter()
    compiled = step.lower(state["ad"], state["opt"], params, j_ids).compile()
    compile_s = time.perf_counter() - t0
    # What the step differentiates: adapter gradients only, no (in, out) gradient of a base weight.
    jaxpr = jax.make_jaxpr(step)(state["ad"], state["opt"], params, j_ids).jaxpr
    grad_shapes = weight_gradient_shapes(jaxpr, c.batch * c.seq)
    adapter_shapes = {tuple(a.shape[1:]) for a in adapters["layers"].values()}
    weight_grads = sum(s not in adapter_shapes for s in grad_shapes)

    def jax_step():
        state["ad"], state["opt"], loss = compiled(state["ad"], state["opt"], params, j_ids)
        return float(loss)  # blocks until the step is done

    first = {"assocjax": jax_step(), "torch": torch_step()}
    print(f"first-step loss: assocjax {first['assocjax']:.6f}  torch {first['torch']:.6f}")
    for _ in range(c.warmup - 1):
        jax_step(), torch_step()
    times, last = {"assocjax": [], "torch": []}, {}
    for i in range(0, c.steps, c.block):
        for name, fn in (("assocjax", jax_step), ("torch", torch_step)):
            for _ in range(min(c.block, c.steps - i)):
                t0 = time.perf_counter()
                last[name] = fn()
                times[name].append(time.perf_counter() - t0)
        print(f"steps {i}..: assocjax {' '.join(f'{t:.2f}' for t in times['assocjax'][i:])} s  "
              f"torch {' '.join(f'{t:.2f}' for t in times['torch'][i:])} s")
    print(f"last-step loss: assocjax {last['assocjax']:.6f}  torch {last['torch']:.6f}")

    mm, mm_torch = matmul_gflops(), torch_matmul_gflops()
    flops = step_flops(cfg, lora, c.batch, c.seq)
    tokens = c.batch * c.seq
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "config": {**dataclasses.asdict(c), "out": str(c.out)},
        "parameters": {"total": int(sum(p.numel() for p in base.parameters()) - n_adapter), "adapters": int(n_adapter)},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "devices": [str(d) for d in jax.devices()]},
        "torch_threads": torch.get_num_threads(), "torch_attention": t_model.config._attn_implementation,
        "first_step_loss": first, "last_step_loss": last,
        "compile_s": compile_s,
        "weight_gradient_products": {"adapters": len(grad_shapes) - weight_grads, "base_weights": weight_grads},
        "step_s": times, "median_step_s": med,
        "tokens_per_s": {k: tokens / v for k, v in med.items()},
        "speedup": med["torch"] / med["assocjax"],
        "step_gflop": flops["total"] / 1e9,
        "achieved_gflop_per_s": {k: flops["total"] / v / 1e9 for k, v in med.items()},
        "matmul_gflop_per_s": {"xla": mm, "torch": mm_torch},
        "load_average_1min": {"start": load_start[0], "end": os.getloadavg()[0]},  # other work on the machine
    }
    write_json(c.out, result)
    print(f"parameters {result['parameters']['total'] / 1e6:.1f}M, adapters {n_adapter / 1e6:.2f}M; "
          f"compile {compile_s:.1f} s; weight-gradient products in the step: "
          f"{len(grad_shapes) - weight_grads} for adapters, {weight_grads} for base weights")
    print(f"median step: assocjax {med['assocjax']:.2f} s ({tokens / med['assocjax']:.0f} tok/s), "
          f"torch+PEFT {med['torch']:.2f} s ({tokens / med['torch']:.0f} tok/s): {result['speedup']:.2f}x")
    print(f"step {flops['total'] / 1e9:.0f} GFLOP: assocjax {result['achieved_gflop_per_s']['assocjax']:.0f} GFLOP/s, "
          f"torch {result['achieved_gflop_per_s']['torch']:.0f} GFLOP/s; matmul ceiling (float32 4096x768 @ "
          f"768x3072) XLA {mm:.0f}, torch {mm_torch:.0f} GFLOP/s")
    print(f"wrote {c.out}")


if __name__ == "__main__":
    main(tyro.cli(Config))
