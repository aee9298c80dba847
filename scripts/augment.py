"""Create, check and inspect associative-memory augmentations: `python scripts/augment.py --help`.

    # a model association every 4 sentences, from a local checkpoint or a chat endpoint
    python scripts/augment.py generate --align stimuli/gentle/pieman/align.csv --model-path /models/llama-2-7b-chat \
        --chat-format llama2 --out aug/pieman-llama.json
    python scripts/augment.py generate --data-root /data/narratives --story pieman --level word \
        --endpoint https://api.openai.com/v1 --api-key-env OPENAI_API_KEY --chat-model gpt-4 --out aug/pieman-gpt4.json
    # human annotations: inline text ("... hospital [doctor, nurse] and ...") or a JSON file
    python scripts/augment.py import notes.txt --align .../pieman/align.csv --level word --out aug/pieman-manual.json
    # the length-matched random control, content from other stories
    python scripts/augment.py random-match --augmentation aug/pieman-gpt4.json --align .../pieman/align.csv \
        --pool-align .../tunnel/align.csv .../lucy/align.csv --seed 0 --out aug/pieman-random.json
    # the shuffled control: the same associations, permuted across the same anchors
    python scripts/augment.py random-match --kind shuffled --augmentation aug/pieman-gpt4.json \
        --align .../pieman/align.csv --seed 0 --out aug/pieman-shuffled.json
    # 19 draws of a control (seeds 0..18): aug/pieman-random-draw00.json .. -draw18.json, one condition each
    python scripts/augment.py random-match --draws 19 --augmentation aug/pieman-gpt4.json ... --out aug/pieman-random.json
    python scripts/augment.py validate aug/pieman-gpt4.json --align .../pieman/align.csv   # exit 1 on error
    #   (with the story: also the lookahead check, a warning; exit 1 with --forbid-lookahead)
    # part of speech of every inserted word, tagged in context (needs spaCy and its model, or --tagger synthetic)
    python scripts/augment.py tag aug/pieman-gpt4.json --align .../pieman/align.csv --tagger spacy:en_core_web_sm \
        --out aug/pieman-gpt4-pos.json
    python scripts/augment.py show aug/pieman-gpt4.json --align .../pieman/align.csv
    # synthetic data: the true augmentation (the planted associates) and its random controls
    python scripts/augment.py oracle --out-dir aug/builtin     # default: the built-in dataset of score.py

The story is `--align FILE` (Gentle align.csv/json; the name defaults to its folder) or
`--data-root DIR --story NAME` (a Narratives dataset; NAME is an alignment folder, task or
story name). Sentence boundaries come from a `transcript.txt` beside the alignment, else
from pauses of at least `--gap-s` seconds. An existing `--out` file is refused (it may be
hand-made) unless `--overwrite`. Outputs are written atomically and only once everything succeeded; until then `generate` keeps the endpoint's completed replies in
`<out>.partial`, which the same command reuses after a failure. The API key is read from the
environment variable `--api-key-env` and never written anywhere.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path
from typing import Literal

import tyro

from assocjax.augment import format as fmt
from assocjax.augment.chat import ChatClient, ChatError
from assocjax.augment.replies import ReplyStore, replies_path
from assocjax.augment.generate import ChatGenerator, GenerationError, LMGenerator, generate_augmentation
from assocjax.augment.lookahead import lookahead
from assocjax.augment.manual import import_json, parse_inline
from assocjax.augment.oracle import write_oracle
from assocjax.augment.pos import TaggerUnavailable, load_tagger, tag_augmentation
from assocjax.augment.random_control import (control_draws, draw_path, pool_from_alignments, random_match,
                                             shuffled_control)
from assocjax.augment.sentences import DEFAULT_GAP_S, boundary_source, story_sentence_ends
from assocjax.augment.stories import load_story
from assocjax.augment.summary import summary_text
from assocjax.cli import run_cli
from assocjax.outputs import OutputFolder, check_new_file
from assocjax.options import at_least, between

Positional = tyro.conf.Positional


def check_gap(gap_s: float) -> None:
    """--gap-s of every subcommand that finds sentence ends from pauses."""
    between("--gap-s", gap_s, 0, 60, lo_open=True, why="a pause (s) that ends a sentence; a minute ends none of a story")


@dataclasses.dataclass(kw_only=True)
class StoryArgs:
    align: Path | None = None
    """Gentle alignment of the story (align.csv or align.json)."""
    data_root: Path | None = None
    """Narratives dataset root, with --story (instead of --align)."""
    story: str | None = None
    """Story name: with --data-root the story to use; with --align its name (default: the alignment's folder)."""

    def given(self) -> bool:
        return self.align is not None or self.data_root is not None

    def load(self):
        """(story name, alignment, alignment file): `assocjax.augment.load_story`."""
        return load_story(self.align, self.data_root, self.story)


@dataclasses.dataclass(kw_only=True)
class WritesAugmentation(StoryArgs):
    out: Path
    """Output augmentation file (.json); an existing one is refused unless --overwrite."""
    overwrite: bool = False
    """Replace an existing --out file (a hand-made augmentation is otherwise safe)."""

    def check_out(self) -> None:
        """Before any work: --out is new, or --overwrite (`assocjax.outputs.check_new_file`)."""
        check_new_file(self.out, "--out", self.overwrite)


@dataclasses.dataclass(kw_only=True)
class Generate(WritesAugmentation):
    """Generate model associations (sentence: one sentence every --every sentences; word: 1..--max-words
    words after each content word of every --every-th sentence)."""

    model_path: Path | None = None
    """Local Hugging Face checkpoint folder of a causal LM (GPT-2 / LLaMA family)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL, e.g. https://api.openai.com/v1 (requests go to {endpoint}/chat/completions)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (unset: no Authorization header)."""
    chat_model: str = "gpt-4"
    """Model name sent to the endpoint."""
    level: Literal["sentence", "word"] = "sentence"
    every: int = 4
    """Associate after every N-th sentence."""
    seed: int = 0
    context_words: int = 200
    """Prompt context: at most this many heard words up to the anchor."""
    max_words: int = 3
    """Word level: at most this many associated words per content word."""
    retries: int = 2
    """Ask again this many times when a reply is empty or unusable."""
    prompt_template: Path | None = None
    """Text file with a prompt template ({context}; {word} at word level; optional {max_words}, {story})."""
    temperature: float = 0.7
    top_p: float = 0.9
    """Local model only: nucleus sampling mass."""
    max_new_tokens: int = 32
    """Reply length limit (tokens; max_tokens for the endpoint)."""
    chat_format: Literal["plain", "llama2"] = "plain"
    """Local model only: wrap prompts in LLaMA-2-chat [INST] tags."""
    batch_size: int = 8
    dtype: Literal["float32", "bfloat16"] = "float32"
    timeout_s: float = 30.0
    """Endpoint only: seconds per request, the whole reply included."""
    max_retries: int = 4
    """Endpoint only: retries on timeouts, connection errors, 429 and 5xx (exponential backoff)."""
    gap_s: float = DEFAULT_GAP_S
    """Pause (s) that ends a sentence when there is no transcript.txt."""

    def check(self) -> None:
        """Every option in range, each error naming it, before the story or model is read."""
        if (self.model_path is None) == (self.endpoint is None):
            raise ValueError("give exactly one backend: --model-path FOLDER or --endpoint URL")
        at_least({"--every": self.every, "--context-words": self.context_words,
                  "--max-new-tokens": self.max_new_tokens, "--batch-size": self.batch_size}, 1)
        at_least({"--seed": self.seed}, 0)
        # upper bounds: a larger value is a typo, not a request (it would run for days or sample noise)
        between("--max-words", self.max_words, 1, self.max_new_tokens,
                why="each word takes at least one token of the --max-new-tokens reply")
        between("--retries", self.retries, 0, 100, why="each retry generates the anchor's reply again")
        between("--max-retries", self.max_retries, 0, 20,
                why="each retry of a request waits up to a minute (exponential backoff)")
        between("--temperature", self.temperature, 0, 10, why="above about 2 sampling is near-uniform noise")
        between("--top-p", self.top_p, 0, 1, lo_open=True)
        between("--timeout-s", self.timeout_s, 0, 86400, lo_open=True, why="seconds per request; at most a day")
        check_gap(self.gap_s)
        if self.model_path is not None:  # the reply and its prompt share the model's positions
            from assocjax.models.loading import read_config, resolve

            positions = read_config(resolve(self.model_path)).max_positions
            if self.max_new_tokens >= positions:
                raise ValueError(f"--max-new-tokens {self.max_new_tokens} must be below the {positions} positions of "
                                 f"--model-path {self.model_path} (the prompt needs the rest)")

    def run(self) -> int:
        self.check()
        self.check_out()  # a resume after a failure finds no --out (the replies are kept in <out>.partial)
        template = None
        if self.prompt_template is not None:
            if not self.prompt_template.is_file():
                raise FileNotFoundError(f"prompt template file not found: {self.prompt_template}")
            template = self.prompt_template.read_text(encoding="utf-8")
        name, t, align_path = self.load()
        ends = story_sentence_ends(t, align_path, self.gap_s)
        replies = None
        if self.endpoint is not None:
            replies = ReplyStore(replies_path(self.out))  # paid replies survive a failed run
            client = ChatClient(self.endpoint, model=self.chat_model, api_key_env=self.api_key_env,
                                timeout_s=self.timeout_s, max_retries=self.max_retries,
                                temperature=self.temperature, max_tokens=self.max_new_tokens, replies=replies)
            generator = ChatGenerator(client)
        else:
            import jax.numpy as jnp

            from assocjax.models import load_pretrained

            model, tok = load_pretrained(self.model_path, dtype=getattr(jnp, self.dtype))
            generator = LMGenerator(model, tok, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                    top_p=self.top_p, seed=self.seed, chat_format=self.chat_format,
                                    batch_size=self.batch_size, name=str(self.model_path))
        try:
            aug = generate_augmentation(t.words, ends, name, generator, level=self.level, every=self.every,
                                        seed=self.seed, context_words=self.context_words, prompt_template=template,
                                        max_words=self.max_words, retries=self.retries, reading=t.reading(),
                                        provenance={"alignment": str(align_path),
                                                    "sentence_boundaries": boundary_source(align_path, self.gap_s)})
        except (GenerationError, ChatError) as e:
            if replies is None or not len(replies):
                raise
            raise type(e)(f"{e}\n{len(replies)} completed replies are kept in {replies.path}: the same command asks "
                          "only for the others (a higher --retries adds new tries; delete the file to ask again "
                          "from the start)") from None
        fmt.save(aug, self.out, t.words)
        if replies is not None:
            replies.remove()  # the output is complete
        print(f"wrote {self.out}: {len(aug.insertions)} {self.level}-level insertions, "
              f"{aug.n_inserted_words} words, id {aug.id}")
        return 0


@dataclasses.dataclass(kw_only=True)
class Import(WritesAugmentation):
    """Import manual annotations: inline text ("... hospital [doctor, nurse] and ...", optionally with each inserted
    word's part of speech: "hospital [doctor/NOUN, nurse/NOUN]") or an augmentation JSON (optional "pos" field)."""

    input: Positional[Path]
    """Inline text file, or a .json augmentation file."""
    level: Literal["word", "sentence"] = "word"
    """Level of the inline insertions."""

    def run(self) -> int:
        if not self.input.is_file():
            raise FileNotFoundError(f"input file not found: {self.input}")
        self.check_out()
        name, t, _ = self.load()
        raw = self.input.read_text(encoding="utf-8")
        if self.input.suffix == ".json" or raw.lstrip().startswith("{"):
            aug = import_json(self.input, t.words)
        else:
            try:
                aug = parse_inline(raw, t.words, name, self.level,
                                   {"generator": "manual-inline", "input": str(self.input)})
            except ValueError as e:  # the parser knows the text, not the file it came from
                raise ValueError(f"{self.input}: {e}") from e
        fmt.save(aug, self.out, t.words)
        print(f"wrote {self.out}: {len(aug.insertions)} insertions, {aug.n_inserted_words} words, id {aug.id}")
        return 0


@dataclasses.dataclass(kw_only=True)
class RandomMatch(WritesAugmentation):
    """A random control of an augmentation: length-matched text from other stories (--kind other-story),
    or the same insertion texts shuffled across the same anchors (--kind shuffled)."""

    augmentation: Path
    """The associative augmentation to match."""
    kind: Literal["other-story", "shuffled"] = "other-story"
    """other-story: content drawn from --pool-align; shuffled: the augmentation's own texts, each moved to
    another anchor of its level (same words and form, wrong place)."""
    pool_align: tuple[Path, ...] = ()
    """other-story: alignments of other stories whose words fill the control."""
    seed: int = 0
    positions: Literal["matched", "random"] = "matched"
    """other-story: insert at the same anchors, or at seeded random ones (sentence level: random sentence ends)."""
    tokenizer: Path | None = None
    """other-story: tokenizer folder; match lengths in its tokens (default: in words)."""
    gap_s: float = DEFAULT_GAP_S
    draws: int = 1
    """Seeded draws of the control (seeds --seed, --seed + 1, ...): with more than one, --out names
    <stem>-drawNN<suffix>, one file per draw, which score.py --augment.compare compares with the association
    as one distribution (K >= 19 draws for a draw p-value of 0.05, K >= 99 for 0.01)."""

    def run(self) -> int:
        at_least({"--seed": self.seed}, 0)
        at_least({"--draws": self.draws}, 1)
        check_gap(self.gap_s)
        if self.kind == "shuffled":
            other = [flag for flag, given in (("--pool-align", bool(self.pool_align)),
                                              ("--positions random", self.positions != "matched"),
                                              ("--tokenizer", self.tokenizer is not None)) if given]
            if other:
                raise ValueError(f"{', '.join(other)}: only for --kind other-story; --kind shuffled keeps the "
                                 "augmentation's own texts and anchors")
        outs = [draw_path(self.out, d, self.draws) for d in range(self.draws)]
        for out in outs:
            check_new_file(out, "--out", self.overwrite)
        tokenizer = _tokenizer(self.tokenizer)
        name, t, align_path = self.load()
        aug = fmt.load(self.augmentation, t.words)
        if self.kind == "shuffled":
            make = lambda seed: shuffled_control(aug, t.words, seed)  # noqa: E731
        else:
            pool = pool_from_alignments(self.pool_align, t.words, name)
            ends = story_sentence_ends(t, align_path, self.gap_s)
            pool_name = ",".join(p.resolve().parent.name for p in self.pool_align)
            make = lambda seed: random_match(aug, t.words, pool, seed, self.positions, tokenizer, ends,  # noqa: E731
                                             pool_name=pool_name)
        controls = control_draws(make, self.seed, self.draws)   # all made before any file is written
        written = []
        try:   # the draws are one distribution: all of them or none (each file is written atomically)
            for out, control in zip(outs, controls):
                fmt.save(control, out, t.words)
                written.append(out)
        except BaseException:
            for out in written:
                out.unlink(missing_ok=True)
            raise
        for out, control in zip(outs, controls):
            if self.kind == "shuffled":
                stuck = control.provenance["unmoved"]
                detail = f"{stuck} could not move" if stuck else "every text moved"
            else:
                detail = f"{control.n_inserted_words} words"
            label = "shuffled" if self.kind == "shuffled" else "random"
            print(f"wrote {out}: {len(control.insertions)} {label} insertions, {detail}, "
                  f"matched to {aug.id}, id {control.id}")
        return 0


@dataclasses.dataclass(kw_only=True)
class Tag(WritesAugmentation):
    """Label every inserted word with its part of speech (Universal Dependencies tags), each tagged in its
    context: the story as the model reads it with every insertion in place. Labels the file had are replaced."""

    augmentation: Positional[Path]
    """The augmentation to label."""
    tagger: str = "spacy:en_core_web_sm"
    """spacy:<model> (needs `pip install spacy` and `python -m spacy download <model>`), or synthetic (the
    built-in world's stand-in rule: its pseudo-words have no part of speech, assocjax.augment.oracle.synthetic_pos)."""

    def run(self) -> int:
        self.check_out()
        nlp = load_tagger(self.tagger)  # a missing spaCy or model is said before any file is read
        _, t, _ = self.load()
        aug = fmt.load(self.augmentation, t.words)
        labelled = tag_augmentation(aug, t.reading(), nlp, self.tagger)
        fmt.save(labelled, self.out, t.words)
        counts = collections.Counter(tag for ins in labelled.insertions for tag in ins.pos)
        top = ", ".join(f"{tag} {n}" for tag, n in counts.most_common())
        print(f"wrote {self.out}: {labelled.n_inserted_words} inserted words tagged by {self.tagger} ({top}), "
              f"id {labelled.id}")
        return 0


@dataclasses.dataclass(kw_only=True)
class Validate(StoryArgs):
    """Check an augmentation file (against the story's alignment when given, then also for lookahead:
    inserted content words the story says only after their anchor, assocjax.augment.lookahead). Exit code 1
    on error."""

    file: Positional[Path]
    forbid_lookahead: bool = False
    """An error (exit 1), not a warning, when more inserted words look ahead than chance allows."""

    def run(self) -> int:
        try:
            words = self.load()[1].words if self.given() else None
            aug = fmt.load(self.file, words)
        except (ValueError, FileNotFoundError) as e:
            print(f"ERROR: {e}")
            return 1
        against = "the story's alignment" if words is not None else "its structure only (no --align given)"
        found = lookahead(aug, words) if words is not None else None
        if found is not None and found.flagged and self.forbid_lookahead:
            print(f"ERROR: {found.message(str(self.file))} (--forbid-lookahead)")
            return 1
        print(f"OK: {self.file}: story {aug.story!r}, {len(aug.insertions)} insertions, checked against {against}")
        if found is not None:
            print(f"lookahead: {len(found.ahead)} of {found.n_content} inserted content words ({found.rate:.1%}) occur "
                  "in the story only after their anchor")
            if found.flagged:
                print(f"WARNING: {found.message(str(self.file))}")
        return 0


@dataclasses.dataclass(kw_only=True)
class Show(StoryArgs):
    """Summarize an augmentation: story, counts per level/source, inserted words/tokens, first insertions."""

    file: Positional[Path]
    n: int = 5
    """Insertions shown in context."""
    context: int = 6
    """Heard words shown on each side."""
    tokenizer: Path | None = None
    """Tokenizer folder: also count inserted tokens."""

    def run(self) -> int:
        at_least({"--n": self.n, "--context": self.context}, 0)
        tokenizer = _tokenizer(self.tokenizer)
        words = self.load()[1].words if self.given() else None
        aug = fmt.load(self.file, words)
        print(summary_text(aug, self.file, words, self.n, self.context, tokenizer))
        return 0


def _tokenizer(folder: Path | None):
    if folder is None:
        return None
    if not folder.is_dir():  # else transformers reads it as a hub name and says "Repo id must be ..."
        raise FileNotFoundError(f"--tokenizer {folder}: folder not found (a tokenizer folder, e.g. a model's)")
    from assocjax.models.loading import load_tokenizer

    return load_tokenizer(folder)


@dataclasses.dataclass(kw_only=True)
class Oracle:
    """The true augmentation of a synthetic dataset (every word + its associates from associations.json),
    one file per story, and its length-matched random controls (content: the other stories' words)."""

    out_dir: Path
    """Folder for <story>_oracle.json and <story>_random.json (its other files are kept)."""
    data_root: Path | None = None
    """A synthetic dataset (scripts/make_synthetic.py); unset: the built-in one of scripts/score.py (its MTL
    parcels were planted from exactly these oracle augmentations, as --augment.mode context reads them)."""
    cache_dir: Path = Path(".assocjax_cache")
    """Where the built-in dataset is cached (as scripts/score.py --cache-dir)."""
    seed: int = 0
    """Seed of the random controls."""
    controls: bool = True
    """Also write the random controls."""
    kinds: tuple[Literal["other-story", "shuffled"], ...] = ("other-story",)
    """Controls written: other-story, <story>_random.json (length-matched words of the other stories);
    shuffled, <story>_shuffled.json (the oracle's own associates, each moved to another word)."""
    draws: int = 1
    """Seeded draws of each control (seeds --seed, --seed + 1, ...); more than one: <story>_random-drawNN.json,
    compared with the oracle as one distribution by score.py --augment.compare."""

    def run(self) -> int:
        at_least({"--seed": self.seed}, 0)
        at_least({"--draws": self.draws}, 1)
        with OutputFolder(self.out_dir, "--out-dir") as out:  # before the built-in data is made
            root = self.data_root
            if root is None:
                from assocjax.pipeline.assets import ensure_builtin
                from assocjax.pipeline.config import SyntheticOptions

                root = ensure_builtin(SyntheticOptions(), self.cache_dir).root
            with out.staging() as stage:  # every story's files together; files of other origin stay
                written = write_oracle(root, stage, self.seed, self.controls, draws=self.draws, kinds=self.kinds)
        print(f"wrote {sum(map(len, written.values()))} files to {self.out_dir} ({len(written)} stories of {root})")
        return 0


COMMANDS = {"generate": Generate, "import": Import, "random-match": RandomMatch, "validate": Validate, "show": Show,
            "oracle": Oracle, "tag": Tag}


def main(argv: list[str] | None = None) -> int:
    """Parse argv (default: sys.argv[1:]), run the subcommand; 0 on success, 2 on an error
    (one line on stderr, the traceback with --debug; no output file is written), 1 when
    `validate` finds the file invalid."""
    def parse(args):
        return tyro.extras.subcommand_cli_from_dict(COMMANDS, args=args, description=__doc__.split("\n")[0])

    return run_cli(lambda cmd: cmd.run(), parse, argv, errors=(GenerationError, ChatError, TaggerUnavailable))


if __name__ == "__main__":
    sys.exit(main())
