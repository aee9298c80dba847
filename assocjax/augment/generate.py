"""Model-generated associations ("simulated associative memory", Yin et al. 2025).

The heard story is expanded with associated content produced by a generator that reads
only the story so far (strictly causal):

- sentence level: after every `every`-th sentence (default 4: the 4th, 8th, ... sentence
  ends) ONE complete associated sentence, prompted with the story up to and including that
  sentence's last word. An anchor on the story's very last word is skipped: text after it
  would precede no heard word, so it cannot change any feature.
- word level: in every `every`-th sentence, after each content word 1..max_words
  associated words, prompted with the story up to and including that word. Without a POS
  tagger offline, a "content word" is a heuristic (`is_content_word`): after stripping
  edge punctuation it is alphabetic, at least 3 letters long and not in `STOP_WORDS`
  (function words, pronouns, auxiliaries, common light verbs/adverbs), which keeps mostly
  nouns, verbs and adjectives.

The prompt context is the last `context_words` heard words up to the anchor. Replies are
cleaned (`clean_reply`); a reply with nothing usable is asked again (a different seed) up
to `retries` times, then `GenerationError` names the story, anchor and raw reply. The
augmentation is returned only when every anchor has its text, so a failed run never
leaves a partial file (the caller saves it atomically).

Generators (`Generator` protocol: `gen(prompts, seed) -> replies`): `LMGenerator` (any
causal LM the project loads, batched left-padded KV-cache generation) and `ChatGenerator`
(an OpenAI-compatible endpoint through `ChatClient`); tests use a plain function.
"""
from __future__ import annotations

import inspect
import re
from typing import Protocol, Sequence

import numpy as np

from .chat import ChatClient
from ..stimuli import Reading
from .format import Augmentation, Insertion, story_hash, validate

LEVELS = ("word", "sentence")

SENTENCE_TEMPLATE = (
    "Here is the beginning of a story:\n\n{context}\n\n"
    "While listening to this story, a person's associative memory brings related thoughts, images or "
    "knowledge to mind. Write ONE short sentence with such an association to the last sentence. "
    "Reply with that sentence only.")
WORD_TEMPLATE = (
    "Here is the beginning of a story:\n\n{context}\n\n"
    "While listening to this story, a person's associative memory brings related concepts to mind. "
    "Give 1 to {max_words} words associated with the word \"{word}\" in this story. "
    "Reply with the words only, separated by commas.")
DEFAULT_TEMPLATES = {"sentence": SENTENCE_TEMPLATE, "word": WORD_TEMPLATE}
PLACEHOLDERS = ("context", "word", "max_words", "story")
SYSTEM_PROMPT = "You simulate the associative memory of a person listening to a story. Answer briefly."

STOP_WORDS = frozenset("""
a about above after again against ago all almost also although always am among an and another any anybody
anyone anything anyway anywhere are aren around as at away back be became because become been before being
below beside besides between both but by came can cannot could couldn did didn do does doesn doing don done
down during each either else enough even ever every everybody everyone everything except far few for from
further get gets getting give given go goes going gone got gotten had hadn has hasn have haven having he her
here hers herself him himself his how however i if in into is isn it its itself just know knew least less let
like made make many may maybe me might mine more most much must my myself near never next no nobody none nor
not nothing now of off oh often okay on once one only onto or other others our ours ourselves out over own
per perhaps put quite rather really said same say says see seem seemed seems shall she should shouldn since
so some somebody someone something sometimes somewhat somewhere soon still such take than that the their
theirs them themselves then there these they thing things this those though through thus till to together
too took toward towards under until up upon us very was wasn way we well went were weren what whatever when
whenever where wherever whether which while who whoever whom whose why will with within without won would
wouldn yeah yes yet you your yours yourself yourselves um uh mhm hmm gonna wanna gotta
""".split())

_EDGE = re.compile(r"^[^\w]+|[^\w]+$")
_BRACKETS = re.compile(r"[\[\]\(\)\{\}<>]")
_DOUBLE_QUOTES = '"“”„«»`'
_SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*")
_ITEM_SPLIT = re.compile(r"[,;/|\n\r\t]+")
_LABEL = re.compile(r"^(?:(?:\d+[.)]|[-*•]) )?(?:(?:[A-Za-z]+ ){0,4}[A-Za-z]+: )?")


class GenerationError(RuntimeError):
    """A generator gave no usable association for an anchor after all retries."""


class Generator(Protocol):
    """Text for each prompt (one str per prompt). `seed` changes on every retry so a
    sampling generator draws a new reply; a generator whose __call__ takes no `seed`
    (`gen(prompts)`) is called without it."""

    def __call__(self, prompts: list[str], seed: int = 0) -> list[str]: ...


def _is_stop(word: str) -> bool:
    """A stop word, also as a contraction's first part ("can't" -> "can", "they're" -> "they")."""
    return re.split(r"['’]", word.lower())[0] in STOP_WORDS


def is_content_word(word: str) -> bool:
    """The content-word heuristic of the module docstring."""
    core = _EDGE.sub("", word)
    return core.isalpha() and len(core) >= 3 and not _is_stop(core)


def clean_reply(reply: str, level: str, max_words: int = 3) -> str:
    """The usable text of a raw reply, or "" when nothing is usable.

    Sentence level: newlines and tabs become spaces, brackets and double quotes go, single
    quotes are stripped from word edges (apostrophes inside words stay), spaces collapse, a
    leading list mark ("1.", "-") and a label of up to 5 words ("Association:") are dropped;
    then the first sentence (through its first . ! ? that ends a word), which must hold a
    word with a letter; a reply cut before any end punctuation keeps all its text and gets
    a final period.
    Word level: the reply is split into items at , ; / | and line breaks; each item keeps
    its words made of letters (inner ' or - allowed) that are not STOP_WORDS nor their
    contractions ("the doctor" -> "doctor", "can't" dropped); items are joined by ", "
    until max_words words in all.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}; got {level!r}")
    if not isinstance(reply, str):
        return ""
    if level == "word":
        return _clean_words(reply, max_words)
    text = _BRACKETS.sub(" ", reply.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    text = text.translate({ord(c): " " for c in _DOUBLE_QUOTES})
    tokens = [t.strip("'‘’") for t in text.split()]
    text = _LABEL.sub("", " ".join(t for t in tokens if t))
    m = _SENTENCE_END.search(text)
    sentence = text[:m.end()] if m else text
    if not any(_WORD.search(t) for t in sentence.split()):
        return ""
    return sentence if m else sentence.rstrip(",;:- ") + "."


def _clean_words(reply: str, max_words: int) -> str:
    items, left = [], max_words
    for item in _ITEM_SPLIT.split(_LABEL.sub("", _BRACKETS.sub(" ", reply).strip())):
        kept = [m.group(0).rstrip("'’-") for t in item.split() if (m := _WORD.fullmatch(_EDGE.sub("", t)))]
        kept = [w for w in kept if not _is_stop(w)][:left]
        if kept:
            items.append(" ".join(kept))
            left -= len(kept)
        if left == 0:
            break
    return ", ".join(items)


def sentence_anchors(sentence_ends: np.ndarray, n_words: int, every: int) -> np.ndarray:
    """Ends of the every-th sentences (the every-th, 2*every-th, ... in story order),
    without the story's last word."""
    ends = np.asarray(sentence_ends)[every - 1::every]
    return ends[ends < n_words - 1]


def word_anchors(words: Sequence[str], sentence_ends: np.ndarray, every: int) -> np.ndarray:
    """Content words of the every-th sentences (sentence k spans ends[k-1]+1 .. ends[k]),
    without the story's last word."""
    ends = np.asarray(sentence_ends)
    starts = np.concatenate([[0], ends[:-1] + 1])
    out = [i for k in range(every - 1, len(ends), every) for i in range(starts[k], ends[k] + 1)
           if is_content_word(words[i]) and i < len(words) - 1]
    return np.asarray(out, dtype=np.int64)


def _check_inputs(words, sentence_ends, story, level, every, context_words, max_words, retries) -> np.ndarray:
    if not words:
        raise ValueError(f"story {story!r}: no words")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}; got {level!r}")
    for name, value, low in (("every", every, 1), ("context_words", context_words, 1), ("max_words", max_words, 1),
                             ("retries", retries, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    ends = np.asarray(sentence_ends)
    if ends.ndim != 1 or (ends.size and not np.issubdtype(ends.dtype, np.integer)):
        raise ValueError(f"story {story!r}: sentence_ends must be a 1-D integer array; got {ends.dtype} {ends.shape}")
    if ends.size and (ends.min() < 0 or ends.max() >= len(words) or (np.diff(ends) <= 0).any()):
        raise ValueError(f"story {story!r}: sentence_ends must be strictly increasing word indices in "
                         f"[0, {len(words) - 1}]; got {ends.tolist()[:10]}{'...' if ends.size > 10 else ''}")
    return ends.astype(np.int64)


def _template(prompt_template: str | None, level: str) -> str:
    template = DEFAULT_TEMPLATES[level] if prompt_template is None else prompt_template
    names = set(re.findall(r"(?<!\{)\{(\w*)\}(?!\})", template))
    unknown = names - set(PLACEHOLDERS)
    if "context" not in names or unknown or (level == "word" and "word" not in names):
        need = "{context} and {word}" if level == "word" else "{context}"
        raise ValueError(f"prompt_template must contain {need} and no other placeholders than "
                         f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}; unknown: {sorted(unknown)}")
    return template


def build_prompt(template: str, words: Sequence[str], anchor: int, context_words: int, story: str,
                 max_words: int, reading: Reading | None = None) -> str:
    """The prompt for `anchor`: only the heard words up to and including it (the last
    context_words of them), so no association can depend on what comes later. With a
    `reading` (the transcript's punctuated text) the context is its text of those words,
    with the anchor's own punctuation; else the words joined by spaces."""
    first = max(0, anchor + 1 - context_words)
    context = " ".join(words[first: anchor + 1]) if reading is None else reading.passage(first, anchor)
    return template.format(context=context, word=_EDGE.sub("", words[anchor]), max_words=max_words, story=story)


def attempt_seed(seed: int, attempt: int) -> int:
    """A distinct, reproducible 31-bit seed per (run seed, try)."""
    return int(np.random.SeedSequence([int(seed), int(attempt)]).generate_state(1)[0] >> 1)


def _takes_seed(generator) -> bool:
    try:
        params = inspect.signature(generator).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): assume the protocol
        return True
    return any(p.name == "seed" or p.kind is p.VAR_KEYWORD for p in params)


def describe_generator(generator) -> dict:
    describe = getattr(generator, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"backend": getattr(generator, "__name__", type(generator).__name__)}


def generate_augmentation(words: Sequence[str], sentence_ends, story: str, generator: Generator,
                          level: str = "sentence", every: int = 4, seed: int = 0, context_words: int = 200,
                          prompt_template: str | None = None, max_words: int = 3, retries: int = 2,
                          provenance: dict | None = None, reading: Reading | None = None) -> Augmentation:
    """An augmentation of `story` (source "model") whose insertions come from `generator`.

    words: the story's alignment words; sentence_ends: heard word indices that end a
    sentence (assocjax.augment.sentences). See the module docstring for the protocol.
    prompt_template: a str.format template with {context} ({word} too at word level;
    {max_words} and {story} optional). provenance: extra JSON-able entries to record (e.g.
    where the sentence boundaries came from). reading: what the prompts quote of the story
    (`Transcript.reading()`: the punctuated transcript when there is one; default the
    words joined by spaces). Raises GenerationError after `retries`
    unusable replies for any anchor; ValueError on bad arguments.
    """
    words = list(words)
    if reading is not None and len(reading) != len(words):
        raise ValueError(f"story {story!r}: the reading has {len(reading)} words, the story {len(words)}")
    ends = _check_inputs(words, sentence_ends, story, level, every, context_words, max_words, retries)
    template = _template(prompt_template, level)
    anchors = sentence_anchors(ends, len(words), every) if level == "sentence" else word_anchors(words, ends, every)
    if anchors.size == 0:
        raise ValueError(f"story {story!r}: no {level}-level anchor (there are {ends.size} sentence ends, "
                         f"every={every}); lower `every` or check the sentence boundaries")
    prompts = [build_prompt(template, words, int(a), context_words, story, max_words, reading) for a in anchors]
    seeded = _takes_seed(generator)
    texts: list[str | None] = [None] * len(prompts)
    raw: list[str] = [""] * len(prompts)
    for attempt in range(retries + 1):
        todo = [i for i, t in enumerate(texts) if t is None]
        if not todo:
            break
        asked = [prompts[i] for i in todo]
        replies = generator(asked, seed=attempt_seed(seed, attempt)) if seeded else generator(asked)
        if not isinstance(replies, (list, tuple)) or len(replies) != len(todo):
            got = f"{len(replies)} replies" if isinstance(replies, (list, tuple)) else type(replies).__name__
            raise GenerationError(f"story {story!r}: generator returned {got} for {len(todo)} prompts")
        for i, reply in zip(todo, replies):
            raw[i] = reply
            texts[i] = clean_reply(reply, level, max_words) or None
    failed = [i for i, t in enumerate(texts) if t is None]
    if failed:
        i = failed[0]
        a = int(anchors[i])
        raise GenerationError(f"story {story!r}: no usable {level}-level association for anchor {a} "
                              f"(after word {words[a]!r}) after {retries + 1} tries; last raw reply: {raw[i]!r}"
                              + (f" ({len(failed) - 1} other anchor(s) failed too)" if len(failed) > 1 else ""))
    insertions = tuple(Insertion(int(a), t, level, "model", words[int(a)]) for a, t in zip(anchors, texts))
    meta = {"generator": describe_generator(generator), "prompt_template": template, "level": level,
            "every": int(every), "seed": int(seed), "context_words": int(context_words), "retries": int(retries),
            "prompt_text": reading.source if reading is not None else "alignment words",
            **({"max_words": int(max_words)} if level == "word" else {}), **(provenance or {})}
    aug = Augmentation(story, story_hash(words), len(words), insertions, meta)
    validate(aug, words, where=f"generated augmentation of {story!r}")
    return aug


class ChatGenerator:
    """Replies from an OpenAI-compatible endpoint, one request per prompt, the seed passed
    on (servers that support `seed` then sample reproducibly)."""

    def __init__(self, client: ChatClient, system_prompt: str | None = SYSTEM_PROMPT):
        self.client, self.system_prompt = client, system_prompt

    def __call__(self, prompts: list[str], seed: int = 0) -> list[str]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [self.client.complete(head + [{"role": "user", "content": p}], seed=seed) for p in prompts]

    def describe(self) -> dict:
        return {**self.client.describe(), "system_prompt": self.system_prompt}


class LMGenerator:
    """Replies sampled from a project `CausalLM` with its tokenizer (assocjax.models).

    Prompts go through in batches of batch_size, LEFT-padded (padded length rounded up to a
    multiple of pad_multiple so few shapes compile) into `assocjax.models.generation.generate`
    with temperature / top_p (temperature 0 = greedy) and the call's seed (folded with the
    batch index). chat_format "llama2" wraps each prompt as `[INST] <<SYS>>...<</SYS>> prompt
    [/INST]` (LLaMA-2-chat); "plain" feeds it as is. Generation stops at the tokenizer's EOS.
    `seed` is used when a call passes none (generate_augmentation passes its own per try).
    A prompt longer than the model's positions minus max_new_tokens is an error (lower
    context_words) rather than silently cut.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 32, temperature: float = 0.7, top_p: float = 0.9,
                 seed: int = 0, chat_format: str = "plain", system_prompt: str | None = SYSTEM_PROMPT,
                 batch_size: int = 8, pad_multiple: int = 32, name: str = ""):
        if chat_format not in ("plain", "llama2"):
            raise ValueError(f"chat_format must be 'plain' or 'llama2'; got {chat_format!r}")
        if batch_size < 1 or pad_multiple < 1:
            raise ValueError(f"batch_size and pad_multiple must be >= 1; got {batch_size}, {pad_multiple}")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.chat_format, self.system_prompt = chat_format, system_prompt
        self.batch_size, self.pad_multiple = batch_size, pad_multiple
        self.name = name or str(getattr(tokenizer, "name_or_path", "") or "")

    def describe(self) -> dict:
        return {"backend": "assocjax-lm", "model": self.name, "arch": self.model.cfg.arch,
                "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "chat_format": self.chat_format,
                "system_prompt": self.system_prompt if self.chat_format == "llama2" else None}

    def format(self, prompt: str) -> str:
        if self.chat_format == "plain":
            return prompt
        from ..models.chat import llama2_chat  # imported here as generate is: assocjax.models loads flax

        return llama2_chat(prompt, self.system_prompt)

    def __call__(self, prompts: list[str], seed: int | None = None) -> list[str]:
        from ..models.generation import generate

        seed = self.seed if seed is None else seed
        ids = [list(self.tokenizer(self.format(p))["input_ids"]) for p in prompts]
        limit = self.model.cfg.max_positions - self.max_new_tokens
        for p, row in zip(prompts, ids):
            if not row or len(row) > limit:
                raise ValueError(f"prompt of {len(row)} tokens does not fit the model ({self.model.cfg.max_positions} "
                                 f"positions - max_new_tokens {self.max_new_tokens} = {limit}); lower context_words. "
                                 f"Prompt starts: {p[:80]!r}")
        eos = self.tokenizer.eos_token_id
        pad = next((t for t in (self.tokenizer.pad_token_id, eos) if t is not None), 0)
        out = []
        for b in range(0, len(ids), self.batch_size):
            batch = ids[b: b + self.batch_size]
            width = min(limit, -(-max(map(len, batch)) // self.pad_multiple) * self.pad_multiple)
            arr = np.full((len(batch), width), pad, np.int32)
            mask = np.zeros((len(batch), width), np.int32)
            for r, row in enumerate(batch):
                arr[r, width - len(row):], mask[r, width - len(row):] = row, 1
            gen = generate(self.model, arr, mask, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           top_p=self.top_p, stop_tokens=() if eos is None else (eos,), pad_token_id=pad,
                           seed=attempt_seed(seed, b // self.batch_size))
            for r in range(len(batch)):
                toks = gen.tokens[r, : gen.lengths[r]].tolist()
                if gen.stopped[r]:
                    toks = toks[:-1]  # the stop token itself
                out.append(self.tokenizer.decode(toks, skip_special_tokens=True))
        return out
