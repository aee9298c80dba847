"""Instruction-tune a model on Association (or control) JSONL: `python scripts/finetune.py --help`.

    python scripts/finetune.py --model /models/llama-2-7b --train data/assoc/train.jsonl \
        --val data/assoc/val.jsonl --out runs/lora --method.name lora --data.fmt llama2
    python scripts/finetune.py ... --method.name frozen --out runs/frozen   # every block, embeddings/head frozen
    python scripts/finetune.py --model /models/llama-2-7b --train data/assoc/train.jsonl \
        --val data/assoc/val.jsonl --cross-fit 4 --out runs/lora-cf   # 4 models, cross-fitted by story

Writes OUT/model (merged Hugging Face model for scripts/score.py --model.path), OUT/adapters
(PEFT, LoRA only), OUT/history.csv|json, OUT/run.json (with the training stories, which
score.py refuses to score the model on); checkpoints go to OUT/checkpoints unless
--checkpoint-dir is given, and a rerun of the same command resumes from them.
The training options come in groups (assocjax.tune.config): --method.* (which method,
assocjax.tune.methods, and its options), --optim.*, --schedule.*, --data.*, and the run's
--dtype, --save-every, --keep, --checkpoint-dir, --progress.
--cross-fit K: the records of --train and --val together, their stories split into K folds
(--fold-seed; OUT/cross_fit.json); model k is tuned on the other folds' records and validated on
its own fold's, into OUT/fold-<k>/ (the same files as above). score.py --compare.models OUT
scores every story with the model that never saw it. A rerun keeps finished folds and resumes
the others from their checkpoints (assocjax.tune.crossfit).
--model is a local folder; a Hugging Face hub name ("org/name") is downloaded only with --hub.
Bad input ends with one line on stderr and exit code 2 (--debug: the traceback).
"""
import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

from assocjax.cli import run_cli
from assocjax.models.loading import check_weights, resolve
from assocjax.options import at_least
from assocjax.outputs import OutputFolder
from assocjax.tune import crossfit, dataset
from assocjax.tune.config import TrainConfig
from assocjax.tune.train import train, write_outputs


@dataclasses.dataclass
class Args:
    model: Path                      # Hugging Face folder (config.json, safetensors, tokenizer)
    train: Path                      # training JSONL
    out: Path                        # output folder
    val: Path | None = None          # validation JSONL
    # the training options, their groups at the top of the command line (--optim.lr, not --tune.optim.lr)
    tune: Annotated[TrainConfig, tyro.conf.arg(name="")] = TrainConfig()
    base_name: str | None = None     # base_model_name_or_path in the PEFT config (default: --model)
    hub: bool = False                # --model is a Hugging Face hub name: download it (needs network)
    cross_fit: int = 0               # K >= 2: K models cross-fitted by story into OUT/fold-<k>; 0: one model
    fold_seed: int = 0               # seed of the story folds of --cross-fit (recorded in OUT/cross_fit.json)


def main(args: Args) -> None:
    args.tune.check()  # every training option, before any file is read (or the folder is locked)
    at_least({"--fold-seed": args.fold_seed}, 0)  # before the folder is locked; numpy refuses it only once --cross-fit draws the folds
    # one run at a time in --out (a second one would train into the same checkpoints); a rerun
    # resumes there, so the folder is locked but not staged
    with OutputFolder(args.out, "--out"):
        tune(args)


def tune(args: Args) -> None:
    folder = resolve(args.model, hub=args.hub)
    check_weights(folder)  # config.json and the weights' headers, before anything long
    train_records = dataset.read_jsonl(args.train)
    val_records = dataset.read_jsonl(args.val) if args.val else []
    files = dict(train_file=str(args.train), val_file=str(args.val) if args.val else None)
    cfg = args.tune
    if args.cross_fit:
        folds = crossfit.cross_fit(cfg, folder, train_records + val_records, args.out, args.cross_fit, args.fold_seed,
                                   args.base_name or str(args.model), extra=files)
        for f in folds:
            print(f"fold {f['fold']} ({f['status']}): held out {', '.join(f['held_out'])}; {f['steps']} steps, "
                  f"loss {f['final_loss']}, held-out loss {f['final_val_loss']} -> {f['folder'] / 'model'}")
        return
    if cfg.checkpoint_dir is None:
        cfg = dataclasses.replace(cfg, checkpoint_dir=args.out / "checkpoints")
    result = train(cfg, folder, train_records, val_records)
    paths = write_outputs(result, args.out, args.base_name or str(args.model),
                          extra=files | crossfit.provenance(train_records, val_records))
    last = result.history[-1] if result.history else {}
    print(f"{cfg.method.name}: {len(result.history)} steps, loss {last.get('loss')}, validation "
          f"{last.get('val_loss')}; {result.n_truncated} training records cut to {cfg.data.max_len} tokens -> "
          f"{paths['model']}")


if __name__ == "__main__":
    sys.exit(run_cli(main, Args, description=__doc__))
