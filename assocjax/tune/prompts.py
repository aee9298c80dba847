"""Prompt formats, tokenisation with an output-only loss mask, and padded / packed batches.

Formats (`render(record, fmt)` gives the whole text; "<s>"/"</s>" stand for the
tokenizer's bos/eos ids, which are added as ids, never parsed from text):

- "plain" (Alpaca style; bos only when the tokenizer has one)::

      <s>### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n{output}</s>

  (the "### Input" section is left out when the input is empty).
- "llama2" (Meta's LLaMA-2 chat format, `models.chat`)::

      <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{instruction}\\n\\n{input} [/INST] {output} </s>

Tokenisation: the whole text (prompt + output, joined as `render` joins them) is encoded in
one call, so training sees exactly the tokens of the full text; the tokens are bos + those +
eos. The prompt/output boundary is where the prompt's own tokens (encoded alone, exactly as
at inference) end when they are a prefix of the full text's, else (a merge across the
boundary) the first token that reaches past the prompt's last character (character offsets
of a fast tokenizer). Encoding the output on its own would not do: a SentencePiece
tokenizer (LLaMA) gives text at the start of an encoding a "▁" word mark it does not have
after the plain format's "\n", and GPT-2 reads the llama2 format's " output" as "Ġ" words.
`loss_mask[t]` marks the tokens that are *targets*: the output tokens and the eos (the loss
at position t - 1 predicts ids[t]).

Too long: when bos + prompt + output + eos exceeds `max_len`, the oldest words of the
input (the start of the passage) are dropped until it fits, never the instruction or the
output; if it cannot fit even with the whole input dropped, a ValueError names the record.

Batches: right padding; `attention` marks real tokens, `loss` the target tokens. With
`pack=True` several records share a row: `segment` numbers the records of a row (0 =
padding) and `position` restarts at 0 for each record; attention is block-diagonal causal
(a token sees only earlier tokens of its own record), built from `segment` by the
trainer's forward (`train.segment_attention`). Rows are padded to a bucketed length (`bucket_length`, quarter
octaves: at most 25 % padding, a handful of compiled shapes).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np

from ..models.chat import B_INST, E_INST, llama2_system

FORMATS = ("plain", "llama2")
OUTPUT_SEP = {"plain": "", "llama2": " "}  # between the prompt and the output in the full text
DEFAULT_SYSTEM = "You are a helpful assistant."


def prompt_parts(record: dict, fmt: str, system: str = DEFAULT_SYSTEM) -> tuple[str, str, str]:
    """(text before the input, text after the input, output text) of a record in `fmt`."""
    instruction, output = record["instruction"].strip(), record["output"].strip()
    has_input = bool(record.get("input", "").strip())
    if fmt == "plain":
        if not has_input:
            return f"### Instruction:\n{instruction}\n\n### Response:\n", "", output
        return f"### Instruction:\n{instruction}\n\n### Input:\n", "\n\n### Response:\n", output
    if fmt == "llama2":
        sys = llama2_system(system.strip())
        if not has_input:
            return f"{B_INST} {sys}{instruction}", f" {E_INST}", output
        return f"{B_INST} {sys}{instruction}\n\n", f" {E_INST}", output
    raise ValueError(f"unknown prompt format {fmt!r}; known: {', '.join(FORMATS)}")


def render(record: dict, fmt: str, system: str = DEFAULT_SYSTEM, bos: str = "<s>", eos: str = "</s>") -> str:
    """The whole training text of a record (for reading; training uses ids, `encode`)."""
    head, tail, output = prompt_parts(record, fmt, system)
    text = f"{bos}{head}{record.get('input', '').strip()}{tail}{OUTPUT_SEP[fmt]}{output}"
    return f"{text} {eos}" if fmt == "llama2" else f"{text}{eos}"


def prompt_text(record: dict, fmt: str, system: str = DEFAULT_SYSTEM) -> str:
    """The prompt a tuned model is given at inference (no bos, no output)."""
    head, tail, _ = prompt_parts(record, fmt, system)
    return f"{head}{record.get('input', '').strip()}{tail}"


def _special_ids(tokenizer, fmt: str) -> tuple[list[int], int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; the loss needs one to learn where an output ends")
    bos = tokenizer.bos_token_id
    if bos is None and fmt == "llama2":
        raise ValueError("the llama2 format needs a tokenizer with a bos token (<s>)")
    return ([] if bos is None else [int(bos)]), int(eos)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def split_tokens(tokenizer, prompt: str, output: str, sep: str, where: str = "?") -> tuple[list[int], list[int]]:
    """(prompt ids, output ids): the tokens of `prompt + sep + output` encoded as one text,
    cut where the prompt ends (module docstring)."""
    text = prompt + sep + output
    full, head = _ids(tokenizer, text), _ids(tokenizer, prompt)
    if full[: len(head)] == head:
        return head, full[len(head):]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"record {where!r}: the tokenizer merges the prompt's end with the output's start, and a "
                         "slow tokenizer gives no character offsets to find the boundary (use a fast tokenizer)")
    ends = [b for _, b in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    cut = next(i for i, b in enumerate(ends) if b > len(prompt))
    return full[:cut], full[cut:]


def encode_record(record: dict, tokenizer, fmt: str, max_len: int,
                  system: str = DEFAULT_SYSTEM) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids (T,) int32, loss_mask (T,) bool, words dropped from the input's start)."""
    bos, eos = _special_ids(tokenizer, fmt)
    head, tail, output = prompt_parts(record, fmt, system)
    words = record.get("input", "").split()
    where = record.get("id", "?")

    def tokens(drop: int) -> tuple[list[int], list[int]]:
        return split_tokens(tokenizer, head + " ".join(words[drop:]) + tail, output, OUTPUT_SEP[fmt], where)

    def size(t) -> int:
        return len(bos) + len(t[0]) + len(t[1]) + 1

    parts, dropped = tokens(0), 0
    if size(parts) > max_len:
        if (least := size(tokens(len(words)))) > max_len:
            raise ValueError(f"record {where!r}: the instruction and output alone take {least} tokens, more than "
                             f"max_len={max_len} (the output is never truncated)")
        lo, hi = 1, len(words)  # the fewest words to drop: tokens(hi) fits, tokens(lo - 1) does not
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if size(tokens(mid)) <= max_len else (mid + 1, hi)
        dropped, parts = lo, tokens(lo)
    prompt_ids, out_ids = parts
    all_ids = np.asarray(bos + prompt_ids + out_ids + [eos], np.int32)
    mask = np.zeros(len(all_ids), bool)
    mask[len(bos) + len(prompt_ids):] = True
    return all_ids, mask, dropped


def encode(record: dict, tokenizer, fmt: str, max_len: int, system: str = DEFAULT_SYSTEM):
    """(ids, loss_mask) of one record (module docstring); see `encode_all` for counts."""
    ids, mask, _ = encode_record(record, tokenizer, fmt, max_len, system)
    return ids, mask


class Encoded(NamedTuple):
    ids: list          # per record (T_i,) int32
    loss_mask: list    # per record (T_i,) bool
    n_truncated: int   # records whose input lost words to fit max_len
    truncated_ids: list  # their record ids


def encode_all(records: Sequence[dict], tokenizer, fmt: str, max_len: int, system: str = DEFAULT_SYSTEM) -> Encoded:
    ids, masks, cut = [], [], []
    for rec in records:
        i, m, dropped = encode_record(rec, tokenizer, fmt, max_len, system)
        ids.append(i)
        masks.append(m)
        if dropped:
            cut.append(rec.get("id", "?"))
    return Encoded(ids, masks, len(cut), cut)


# -- batches -------------------------------------------------------------------------------
class Batch(NamedTuple):
    ids: np.ndarray        # (B, S) int32, pad_id after the real tokens
    attention: np.ndarray  # (B, S) bool, real tokens
    loss: np.ndarray       # (B, S) bool, target tokens (output + eos)
    segment: np.ndarray    # (B, S) int32, 1.. per record in the row, 0 = padding
    position: np.ndarray   # (B, S) int32, restarts at 0 per record


def bucket_length(n: int, max_len: int, minimum: int = 16) -> int:
    """The smallest quarter-octave size (16, 20, 24, 28, 32, 40, ...) >= n, capped at max_len."""
    size = minimum
    while size < n:
        step = max(1, 1 << max(0, size.bit_length() - 3))
        size += step
    return min(size, max_len)


def rows_stream(lengths: Sequence[int], seed: int, max_len: int, pack: bool) -> Iterator[list[int]]:
    """Rows of record indices forever: epoch e visits the records in the order
    permutation([seed, e]); without packing a row is one record, with packing records are
    added to a row in that order while they fit in max_len. A pure function of its
    arguments, so a resumed run rebuilds exactly the rows it would have seen."""
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        raise ValueError("no records to make batches from")
    epoch, row, used = 0, [], 0
    while True:
        for i in np.random.default_rng([seed, epoch]).permutation(len(lengths)):
            i = int(i)
            if not pack:
                yield [i]
                continue
            if row and used + lengths[i] > max_len:
                yield row
                row, used = [], 0
            row.append(i)
            used += int(lengths[i])
        epoch += 1


def rows_in_order(lengths: Sequence[int], max_len: int, pack: bool) -> list[list[int]]:
    """One pass over the records in their order (validation)."""
    rows, row, used = [], [], 0
    for i, n in enumerate(lengths):
        if not pack:
            rows.append([i])
            continue
        if row and used + n > max_len:
            rows.append(row)
            row, used = [], 0
        row.append(i)
        used += int(n)
    return rows + ([row] if row else [])


def make_batch(rows: Sequence[Sequence[int]], enc: Encoded, pad_id: int, max_len: int,
               n_rows: int | None = None, fixed: bool = False) -> Batch:
    """A Batch of `n_rows` rows (default len(rows); extra rows are all padding), padded to
    the bucketed length of the longest row (to max_len when `fixed`)."""
    n_rows = len(rows) if n_rows is None else n_rows
    longest = max([sum(len(enc.ids[i]) for i in row) for row in rows] + [1])
    if longest > max_len:
        raise ValueError(f"a row of {longest} tokens exceeds max_len={max_len}")
    s = max_len if fixed else bucket_length(longest, max_len)
    ids = np.full((n_rows, s), pad_id, np.int32)
    loss = np.zeros((n_rows, s), bool)
    segment = np.zeros((n_rows, s), np.int32)
    position = np.zeros((n_rows, s), np.int32)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row, 1):
            t = len(enc.ids[i])
            ids[r, at: at + t] = enc.ids[i]
            loss[r, at: at + t] = enc.loss_mask[i]
            segment[r, at: at + t] = k
            position[r, at: at + t] = np.arange(t)
            at += t
    return Batch(ids, segment > 0, loss, segment, position)


def batches(enc: Encoded, batch_size: int, pad_id: int, max_len: int, pack: bool = False,
            seed: int | None = None, fixed: bool = False) -> Iterator[Batch]:
    """Batches over the records: one shuffled-by-seed pass (seed=None keeps the order; the
    last batch is filled up with padding rows so every batch has batch_size rows)."""
    lengths = [len(i) for i in enc.ids]
    order = np.arange(len(lengths)) if seed is None else np.random.default_rng(seed).permutation(len(lengths))
    rows = [[int(order[i]) for i in row] for row in rows_in_order([lengths[j] for j in order], max_len, pack)]
    for start in range(0, len(rows), batch_size):
        yield make_batch(rows[start: start + batch_size], enc, pad_id, max_len, n_rows=batch_size, fixed=fixed)
