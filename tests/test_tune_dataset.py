"""The Association dataset (build, split, validation, JSONL) and prompt encoding."""
import json

import numpy as np
import pytest

from assocjax.augment.format import Augmentation, Insertion, story_hash
from assocjax.tune import dataset, prompts

VOCAB = [f"w{i}" for i in range(30)]


def make_stories(n_stories=4, n_words=120, seed=0):
    """Stories of pseudo-words (every 7th ends a sentence with a full stop) and one
    augmentation per story with 6 insertions of 1-5 words."""
    rng = np.random.default_rng(seed)
    stories = {f"s{k}": [VOCAB[i] + "." if j % 7 == 6 else VOCAB[i]
                         for j, i in enumerate(rng.integers(0, len(VOCAB), n_words))] for k in range(n_stories)}
    augs = {}
    for s, words in stories.items():
        anchors = rng.choice(np.arange(10, n_words - 1), 6, replace=False)
        ins = tuple(Insertion(int(a), " ".join(rng.choice(VOCAB, rng.integers(1, 6))), "word", "manual")
                    for a in anchors)
        augs[s] = [Augmentation(s, story_hash(words), len(words), ins)]
    return stories, augs


def word_tokenizer(texts):
    """A word-level fast tokenizer (whitespace split, case kept) over the words of `texts`,
    with <unk> = 0, <s> = 1, </s> = 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()} - {"<unk>", "<s>", "</s>"})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tokenizer_for(records):
    texts = [prompts.render(r, f, bos="", eos="") for r in records for f in prompts.FORMATS]
    texts += list(dataset.TEMPLATES) + [t for ts in dataset.CONTROL_TEMPLATES.values() for t in ts]
    return word_tokenizer(texts)


@pytest.fixture(scope="module")
def data():
    stories, augs = make_stories()
    return stories, augs, dataset.build_records(stories, augs, n=20, seed=1, passage_words=(5, 12))


# -- building --------------------------------------------------------------------------------
def test_build_records_passages_end_at_anchor_and_output_is_insertion(data):
    stories, augs, recs = data
    assert len(recs) == 20 and len({r["id"] for r in recs}) == 20
    texts = {(s, i.anchor): [] for s, a in augs.items() for i in a[0].insertions}
    for s, a in augs.items():
        for i in a[0].insertions:
            texts[(s, i.anchor)].append(i.text)
    for r in recs:
        words = stories[r["story"]]
        passage = r["input"].split()
        assert passage == words[r["anchor"] + 1 - len(passage): r["anchor"] + 1]
        assert 5 <= len(passage) <= 12
        assert r["output"] in texts[(r["story"], r["anchor"])]
        assert r["instruction"] in dataset.TEMPLATES and r["task"] == "association"
        dataset.validate_record(r)
    assert dataset.describe(recs)["n_repeats"] == 0  # 20 <= 24 insertions: each used at most once
    assert recs == dataset.build_records(stories, augs, n=20, seed=1, passage_words=(5, 12))
    assert recs != dataset.build_records(stories, augs, n=20, seed=2, passage_words=(5, 12))


def test_more_samples_than_insertions_draws_with_replacement(data):
    stories, augs, _ = data
    recs = dataset.build_records(stories, augs, n=50, seed=0)
    keys = {(r["story"], r["anchor"]) for r in recs}
    assert len(keys) == 24  # every insertion used at least once
    assert dataset.describe(recs)["n_repeats"] == 50 - 24
    assert len({r["id"] for r in recs}) == 50


def test_control_tasks_share_passages_and_take_outputs_from_the_story(data):
    stories, augs, assoc = data
    ends = {s: np.array([w.endswith(".") or i == len(ws) - 1 for i, w in enumerate(ws)]) for s, ws in stories.items()}
    for task in ("continue", "summarise"):
        ctrl = dataset.build_records(stories, augs, n=20, seed=1, passage_words=(5, 12), task=task)
        assert [r["input"] for r in ctrl] == [r["input"] for r in assoc]
        assert all(r["instruction"] in dataset.CONTROL_TEMPLATES[task] and r["task"] == task for r in ctrl)
        for r in ctrl:
            words, out = stories[r["story"]], r["output"].split()
            if task == "continue":  # the story's next words up to the end of the sentence
                a = r["anchor"]
                assert out == words[a + 1: a + 1 + len(out)]
                assert ends[r["story"]][a + len(out)] and not ends[r["story"]][a + 1: a + len(out)].any()
            else:  # lead-1: from the passage's first sentence start to that sentence's end
                e, a = ends[r["story"]], r["anchor"]
                start = a + 1 - len(r["input"].split())
                starts = [i for i in range(start, a + 1) if i == 0 or e[i - 1]]
                first = starts[0] if starts else start
                assert out == words[first: first + len(out)]
                last = first + len(out) - 1
                assert e[last] or last == a or len(out) == dataset.SUMMARY_MAX_WORDS
                assert not e[first: last].any()
    # Given sentence ends (e.g. from pauses) override the words' own punctuation.
    s0 = {"s0": stories["s0"]}
    given = dataset.build_records(s0, {"s0": augs["s0"]}, n=6, seed=1, task="continue",
                                  sentence_ends={"s0": [len(stories["s0"]) - 1]})
    for r in given:  # no sentence end before the story's last word: the continuation runs to its cap
        assert len(r["output"].split()) == min(dataset.CONTINUE_MAX_WORDS, len(stories["s0"]) - 1 - r["anchor"])


def test_build_records_errors(data):
    stories, augs, _ = data
    with pytest.raises(ValueError, match="task 'poem'"):
        dataset.build_records(stories, augs, task="poem")
    with pytest.raises(ValueError, match="no words"):
        dataset.build_records({"s0": stories["s0"]}, augs)
    bad = {"s0": [Augmentation("s0", "x", 120, (Insertion(500, "far", "word", "manual"),))]}
    with pytest.raises(ValueError, match="anchor 500 is outside"):
        dataset.build_records(stories, bad)
    last = {"s0": [Augmentation("s0", "x", 120, (Insertion(119, "end", "word", "manual"),))]}
    with pytest.raises(ValueError, match="no insertions"):  # nothing follows the last word: not used
        dataset.build_records(stories, last)


def test_split_by_story_never_shares_a_story(data):
    _, _, recs = data
    for seed in range(4):
        train, val = dataset.split_by_story(recs, val_fraction=0.3, seed=seed)
        assert len(train) + len(val) == len(recs) and train and val
        assert not {r["story"] for r in train} & {r["story"] for r in val}
        assert len(val) >= 0.3 * len(recs)
    with pytest.raises(ValueError, match="at least two stories"):
        dataset.split_by_story([r for r in recs if r["story"] == "s0"])


# -- validation and files ----------------------------------------------------------------------
GOOD = dict(instruction="Say.", input="a b", output="c", story="s", id="1")


@pytest.mark.parametrize("change, message", [
    (dict(output=None), "missing field 'output'"),
    (dict(output="  "), "field 'output' is empty"),
    (dict(output=3), "field 'output' must be a string, got int"),
    (dict(instruction=""), "field 'instruction' is empty"),
    (dict(input=["a"]), "field 'input' must be a string, got list"),
    (dict(task="poem"), "field 'task' is 'poem'"),
    (dict(anchor="3"), "field 'anchor' must be int"),
])
def test_bad_records_name_file_line_and_field(tmp_path, change, message):
    rec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**rec, "id": "2"}) + "\n")
    with pytest.raises(ValueError, match=f"d.jsonl:3: {message}"):
        dataset.read_jsonl(path)


def test_jsonl_file_errors_and_round_trip(tmp_path, data):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(ValueError, match="d.jsonl:2: not valid JSON"):
        dataset.read_jsonl(path)
    path.write_text(json.dumps(GOOD) + "\n[1]\n")
    with pytest.raises(ValueError, match="d.jsonl:2: a record must be a JSON object, got list"):
        dataset.read_jsonl(path)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(ValueError, match="d.jsonl:2: duplicate id '1' \\(first on line 1\\)"):
        dataset.read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        dataset.read_jsonl(tmp_path / "missing.jsonl")
    recs = data[2]
    out = dataset.write_jsonl(recs, tmp_path / "ok.jsonl")
    assert dataset.read_jsonl(out) == recs
    with pytest.raises(ValueError, match="record 1: field 'output' is empty"):
        dataset.write_jsonl([recs[0], {**recs[1], "output": ""}], tmp_path / "ok.jsonl")
    assert dataset.read_jsonl(out) == recs  # the failed write left the old file whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "ok.jsonl"]


# -- prompts ---------------------------------------------------------------------------------
REC = dict(instruction="Say what comes to mind.", input="the old man sat", output="fish sea", story="s", id="r")


def test_prompt_formats():
    assert prompts.render(REC, "llama2") == ("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
                                             "Say what comes to mind.\n\nthe old man sat [/INST] fish sea </s>")
    assert prompts.render(REC, "plain") == ("<s>### Instruction:\nSay what comes to mind.\n\n### Input:\n"
                                            "the old man sat\n\n### Response:\nfish sea</s>")
    assert prompts.render({**REC, "input": ""}, "plain") == ("<s>### Instruction:\nSay what comes to mind.\n\n"
                                                             "### Response:\nfish sea</s>")
    assert prompts.prompt_text(REC, "llama2", system="") == "[INST] Say what comes to mind.\n\nthe old man sat [/INST]"
    with pytest.raises(ValueError, match="unknown prompt format 'chatml'"):
        prompts.render(REC, "chatml")


@pytest.mark.parametrize("fmt", prompts.FORMATS)
def test_loss_mask_covers_exactly_output_and_eos(fmt):
    tok = tokenizer_for([REC])
    ids, mask = prompts.encode(REC, tok, fmt, 64)
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert [t for t, m in zip(tokens, mask) if m] == ["fish", "sea", "</s>"]
    assert mask[-3:].all() and not mask[:-3].any()
    assert tokens == prompts.render(REC, fmt).replace("<s>", "<s> ").replace("</s>", " </s>").split()


def _llama_tokenizer(folder, texts, vocab_size):
    from transformers import AutoTokenizer

    from conftest import save_llama_tokenizer

    return AutoTokenizer.from_pretrained(save_llama_tokenizer(folder, texts, vocab_size))


def _gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    from conftest import SHARED

    return GPT2TokenizerFast.from_pretrained(str(SHARED / "tokenizers" / "gpt2"))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("fmt", prompts.FORMATS)
def test_training_tokens_are_the_tokens_of_the_full_text(kind, fmt, tmp_path):
    """A SentencePiece-style tokenizer marks the first word of an encoding with "▁", which the
    output does not have after the plain format's "\n"; GPT-2 reads the llama2 format's
    " output" as "Ġ" words. Training must see the full text's tokens, the prompt's own
    tokens (as at inference) first."""
    recs = [REC, {**REC, "input": "", "id": "r2"}, {**REC, "output": "Fish, the sea!", "id": "r3"}]
    if kind == "llama":
        tok = _llama_tokenizer(tmp_path, [prompts.render(r, f, bos="", eos="") for r in recs for f in prompts.FORMATS],
                               120)
    else:
        tok = _gpt2_tokenizer()
    for rec in recs:
        ids, mask = prompts.encode(rec, tok, fmt, 256)
        full = tok.encode(prompts.render(rec, fmt, bos="", eos="").rstrip(), add_special_tokens=False)
        assert ids.tolist() == [tok.bos_token_id] + full + [tok.eos_token_id], (rec["id"], tok.convert_ids_to_tokens(ids))
        first = int(np.argmax(mask))
        assert mask[first:].all() and ids[1:first].tolist() == tok.encode(prompts.prompt_text(rec, fmt),
                                                                          add_special_tokens=False)
        assert tok.decode(ids[mask][:-1]).strip() == rec["output"]


def test_boundary_inside_a_token_makes_that_token_a_target(tmp_path):
    """A tokenizer that merges the prompt's last characters with the output's first (no
    prefix property): the tokens stay those of the full text, and the straddling token is
    the first target (character offsets)."""
    tok = _llama_tokenizer(tmp_path, [prompts.render(REC, "plain", bos="", eos="")] * 20, 200)
    full = tok.encode(prompts.render(REC, "plain", bos="", eos=""), add_special_tokens=False)
    head = tok.encode(prompts.prompt_text(REC, "plain"), add_special_tokens=False)
    assert full[: len(head)] != head  # the case under test
    ids, mask = prompts.encode(REC, tok, "plain", 256)
    assert ids.tolist() == [tok.bos_token_id] + full + [tok.eos_token_id]
    targets = tok.convert_ids_to_tokens(ids[mask].tolist())
    assert targets[0].endswith("\nfish") and "".join(targets[:-1]).endswith("fish▁sea")
    assert not mask[: int(np.argmax(mask))].any() and mask[int(np.argmax(mask)):].all()

    class Slow:  # a tokenizer without character offsets
        is_fast, bos_token_id, eos_token_id = False, tok.bos_token_id, tok.eos_token_id
        encode = tok.encode

    with pytest.raises(ValueError, match="record 'r': the tokenizer merges the prompt's end with the output's start"):
        prompts.encode(REC, Slow(), "plain", 256)


def test_truncation_drops_oldest_input_words_and_is_counted():
    long = {**REC, "input": " ".join(f"w{i}" for i in range(30)), "id": "long"}
    tok = tokenizer_for([long, REC])
    full, _ = prompts.encode(long, tok, "plain", 200)
    ids, mask = prompts.encode(long, tok, "plain", 40)
    assert len(full) > 40 and len(ids) == 40
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    kept = [t for t in tokens if t[0] == "w" and t[1:].isdigit()]
    assert kept == [f"w{i}" for i in range(30 - len(kept), 30)]  # the newest words stay, in order
    assert " ".join(tokens).startswith("<s> ### Instruction: Say what comes to mind.")
    assert [t for t, m in zip(tokens, mask) if m] == ["fish", "sea", "</s>"]
    enc = prompts.encode_all([REC, long, REC | {"id": "r2"}], tok, "plain", 40)
    assert enc.n_truncated == 1 and enc.truncated_ids == ["long"]
    assert all(len(i) <= 40 for i in enc.ids)
    with pytest.raises(ValueError, match="record 'long': the instruction and output alone take 15 tokens, more than "
                                         "max_len=12 \\(the output is never truncated\\)"):
        prompts.encode(long, tok, "plain", 12)


def test_batches_pad_right_and_pack_with_segments():
    recs = [{**REC, "id": str(i), "input": " ".join(["the"] * i)} for i in range(1, 6)]
    tok = tokenizer_for(recs)
    enc = prompts.encode_all(recs, tok, "plain", 64)
    lengths = [len(i) for i in enc.ids]
    (b1, b2) = list(prompts.batches(enc, 3, pad_id=2, max_len=64))
    assert b1.ids.shape == (3, prompts.bucket_length(max(lengths[:3]), 64))
    for r, i in enumerate(range(3)):
        n = lengths[i]
        assert (b1.ids[r, :n] == enc.ids[i]).all() and (b1.ids[r, n:] == 2).all()
        assert b1.attention[r, :n].all() and not b1.attention[r, n:].any()
        assert (b1.loss[r, :n] == enc.loss_mask[i]).all() and not b1.loss[r, n:].any()
        assert (b1.position[r, :n] == np.arange(n)).all()
    assert not b2.attention[2].any()  # filler row
    (p,) = list(prompts.batches(enc, 3, pad_id=2, max_len=64, pack=True, fixed=True))
    assert p.ids.shape == (3, 64)
    rows = prompts.rows_in_order(lengths, 64, pack=True)
    assert sum(rows, []) == list(range(5)) and all(sum(lengths[i] for i in r) <= 64 for r in rows)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row, 1):
            n = lengths[i]
            assert (p.segment[r, at: at + n] == k).all() and (p.position[r, at: at + n] == np.arange(n)).all()
            assert (p.ids[r, at: at + n] == enc.ids[i]).all() and (p.loss[r, at: at + n] == enc.loss_mask[i]).all()
            at += n
        assert (p.segment[r, at:] == 0).all()
    assert [prompts.bucket_length(n, 100) for n in (1, 16, 17, 33, 41, 65, 99)] == [16, 16, 20, 40, 48, 80, 100]


def test_rows_stream_is_a_function_of_seed():
    a = prompts.rows_stream([5] * 7, seed=3, max_len=64, pack=False)
    first = [next(a)[0] for _ in range(14)]
    assert sorted(first[:7]) == list(range(7)) and sorted(first[7:]) == list(range(7))  # epochs
    assert first[:7] != first[7:]
    b = prompts.rows_stream([5] * 7, seed=3, max_len=64, pack=False)
    assert [next(b)[0] for _ in range(14)] == first
