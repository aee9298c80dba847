"""Model/endpoint-generated associations: the chat client against a stub server on
127.0.0.1, generate_augmentation with fake generators, LMGenerator on a tiny random GPT-2,
and scripts/augment.py run in-process."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from scripts_loader import script

from assocjax.augment import format as fmt
from assocjax.augment.random_control import shuffled_control
from assocjax.augment.chat import ChatClient, ChatError
from assocjax.augment.generate import (SENTENCE_TEMPLATE, ChatGenerator, GenerationError, LMGenerator, attempt_seed,
                                       clean_reply, generate_augmentation, is_content_word)

SECRET = "sk-test-0123456789-secret"


# ---------------------------------------------------------------- stub chat server

def completion(content) -> str:
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


class Stub:
    """Scripted replies (status, body, delay_s, headers) popped per request, then `reply(request)`."""

    def __init__(self):
        self.requests, self.script = [], []
        self.reply = lambda req: (200, completion("The reporter remembered an old newspaper."), 0, {})


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        stub = self.server.stub
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        stub.requests.append(req)
        status, payload, delay, headers = stub.script.pop(0) if stub.script else stub.reply(req)
        time.sleep(delay)
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            data = payload.encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def stub(server):
    server.stub = Stub()
    server.stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server.stub


def client(stub, sleeps=None, **kw):
    kw = {"api_key": SECRET, "model": "stub-model", "timeout_s": 5, "max_retries": 3, "backoff_s": 1.0, **kw}
    return ChatClient(stub.url + "/v1", sleep=(sleeps.append if sleeps is not None else None) or (lambda s: None), **kw)


MSG = [{"role": "user", "content": "hospital?"}]


def test_chat_success_sends_key_in_header_only(stub):
    c = client(stub, temperature=0.2, max_tokens=16)
    assert c.complete(MSG, seed=7) == "The reporter remembered an old newspaper."
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"] == {"model": "stub-model", "messages": MSG, "temperature": 0.2, "max_tokens": 16, "seed": 7}
    assert SECRET not in json.dumps(c.describe()) and SECRET not in repr(c)


def test_chat_url_forms_and_key_from_env(stub, monkeypatch):
    for base in ("http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/chat/completions"):
        assert ChatClient(base, api_key="k").url == "http://h:1/v1/chat/completions"
    assert ChatClient("http://h:1", api_key="k").url == "http://h:1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        ChatClient("h:1/v1")
    monkeypatch.setenv("ASSOCJAX_TEST_KEY", "sk-from-env")
    ChatClient(stub.url, api_key_env="ASSOCJAX_TEST_KEY").complete(MSG)
    monkeypatch.delenv("ASSOCJAX_TEST_KEY")
    ChatClient(stub.url, api_key_env="ASSOCJAX_TEST_KEY").complete(MSG)
    assert stub.requests[0]["headers"]["Authorization"] == "Bearer sk-from-env"
    assert "Authorization" not in stub.requests[1]["headers"]  # no key: no header


def test_chat_retries_5xx_and_429_with_growing_backoff(stub):
    stub.script = [(500, "oops", 0, {}), (502, "bad gateway", 0, {}), (503, "busy", 0, {}),
                   (200, completion("fine"), 0, {})]
    sleeps = []
    assert client(stub, sleeps).complete(MSG) == "fine"
    assert sleeps == [1.0, 2.0, 4.0] and len(stub.requests) == 4
    stub.script = [(429, "slow down", 0, {"Retry-After": "7"}), (200, completion("ok"), 0, {})]
    sleeps.clear()
    assert client(stub, sleeps).complete(MSG) == "ok"
    assert sleeps == [7.0]  # the server's Retry-After beats the 1 s backoff


def test_chat_gives_up_with_url_status_and_body(stub):
    stub.reply = lambda req: (500, f"server exploded for {SECRET}", 0, {})
    sleeps = []
    with pytest.raises(ChatError) as e:
        client(stub, sleeps, max_retries=2).complete(MSG)
    msg = str(e.value)
    assert f"{stub.url}/v1/chat/completions" in msg and "HTTP 500" in msg and "after 3 tries" in msg
    assert "server exploded" in msg and SECRET not in msg  # an echoed key is redacted
    assert sleeps == [1.0, 2.0] and len(stub.requests) == 3


def test_chat_stall_longer_than_timeout_is_retried_then_fails(stub):
    stub.reply = lambda req: (200, completion("too late"), 0.6, {})
    sleeps, t0 = [], time.perf_counter()
    with pytest.raises(ChatError, match=r"after 2 tries: no reply within the 0.15 s timeout"):
        client(stub, sleeps, timeout_s=0.15, max_retries=1).complete(MSG)
    assert len(stub.requests) == 2 and sleeps == [1.0]
    assert time.perf_counter() - t0 < 1.0  # gave up at the timeout, did not wait for the reply


def test_chat_4xx_is_not_retried(stub):
    stub.script = [(400, '{"error": {"message": "unknown model stub-model"}}', 0, {})]
    sleeps = []
    with pytest.raises(ChatError, match=r"not retried\): HTTP 400.*unknown model stub-model"):
        client(stub, sleeps).complete(MSG)
    assert len(stub.requests) == 1 and sleeps == []


@pytest.mark.parametrize("body, match", [("<html>proxy error</html>", "not JSON.*proxy error"),
                                         ('{"choices": []}', r"no choices\[0\].message.content"),
                                         (completion(None), "is NoneType, not text")])
def test_chat_malformed_reply(stub, body, match):
    stub.script = [(200, body, 0, {})]
    with pytest.raises(ChatError, match=match):
        client(stub).complete(MSG)
    assert len(stub.requests) == 1


def test_chat_connection_refused_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    sleeps = []
    c = ChatClient(f"http://127.0.0.1:{port}/v1", api_key=SECRET, max_retries=2, sleep=sleeps.append)
    with pytest.raises(ChatError, match="after 3 tries: connection error"):
        c.complete(MSG)
    assert sleeps == [1.0, 2.0]


@pytest.fixture
def dripping_server():
    """A raw TCP server on 127.0.0.1 that answers every request with a valid reply sent one
    byte every 2 s: each read gets data well within a 3 s socket timeout."""
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)

    def drip(conn):
        with conn:
            conn.settimeout(10)
            try:
                while b"\r\n\r\n" not in conn.recv(65536):
                    pass
            except OSError:
                return
            reply = f"HTTP/1.1 200 OK\r\nContent-Length: {len(completion('hi'))}\r\n\r\n{completion('hi')}".encode()
            for i in range(len(reply)):
                try:
                    conn.sendall(reply[i:i + 1])
                except OSError:  # the client gave up
                    return
                if stop.wait(2.0):
                    return

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    stop.set()
    srv.close()


def test_chat_timeout_bounds_the_whole_request_not_each_read(dripping_server):
    c = ChatClient(dripping_server, api_key=SECRET, timeout_s=3, max_retries=1, sleep=lambda s: None)
    outcome = {}

    def ask():
        t0 = time.perf_counter()
        try:
            c.complete(MSG)
        except ChatError as e:
            outcome["error"] = str(e)
        outcome["s"] = time.perf_counter() - t0

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(timeout=15)
    assert not asker.is_alive(), "the dripped reply held the request open past its timeout"
    assert "after 2 tries: no reply within the 3 s timeout" in outcome["error"]
    assert 6 <= outcome["s"] < 9  # two tries of 3 s each, not a byte every 2 s for ever


def test_reply_store_keeps_replies_and_refuses_a_foreign_file(stub, tmp_path):
    from assocjax.augment.replies import ReplyStore, replies_path

    path = replies_path(tmp_path / "aug.json")
    assert path.name == "aug.json.partial"
    c = client(stub, replies=ReplyStore(path))
    assert c.complete(MSG, seed=1) == "The reporter remembered an old newspaper."
    again = client(stub, replies=ReplyStore(path))          # a new run reads the file
    assert again.complete(MSG, seed=1) == "The reporter remembered an old newspaper." and len(stub.requests) == 1
    again.complete(MSG, seed=2)                               # another request: asked
    assert len(stub.requests) == 2 and len(ReplyStore(path)) == 2
    assert SECRET not in path.read_text()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="aug.json.partial: cannot reuse this partial replies file"):
        ReplyStore(path)


# ---------------------------------------------------------------- generate_augmentation

def unique_words(n):
    """n distinct 4-letter content words ("zaab", ...): a prompt's tokens show exactly
    which story words it saw."""
    letters = "abcdefghijklmnopqrstuvwxy"
    return [f"z{letters[i // 625]}{letters[i // 25 % 25]}{letters[i % 25]}" for i in range(n)]


def make_story(n_sentences=12, per=6):
    """Sentences of `per` words: "the <u> <u> and <u> <u>"; returns (words, sentence_ends)."""
    u = iter(unique_words(n_sentences * per))
    words = [w if w in ("the", "and") else next(u) for _ in range(n_sentences)
             for w in ("the", "x", "x", "and", "x", "x")[:per]]
    return words, np.arange(per - 1, n_sentences * per, per)


class Fake:
    """A generator that records (prompt, seed) and answers with reply(prompt, call)."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, prompts, seed=0):
        self.calls.append((list(prompts), seed))
        return [self.reply(p, len(self.calls) - 1) for p in prompts]

    def describe(self):
        return {"backend": "fake"}


def seen(prompt, words):
    """The unique story words a prompt shows."""
    return {w for w in prompt.split() if w in set(words) and w.startswith("z")}


def test_sentence_anchors_every_4th_sentence_and_causal_prompts():
    words, ends = make_story(13)
    fake = Fake(lambda p, c: "A doctor smiled.")
    aug = generate_augmentation(words, ends, "tiny", fake, every=4, context_words=10)
    anchors = [i.anchor for i in aug.insertions]
    assert anchors == [int(ends[3]), int(ends[7]), int(ends[11])]  # the 4th, 8th, 12th sentence ends
    assert [i.text for i in aug.insertions] == ["A doctor smiled."] * 3
    assert {(i.level, i.source) for i in aug.insertions} == {("sentence", "model")}
    (prompts, _), = fake.calls
    for a, p in zip(anchors, prompts):
        # strictly causal: the context ends at the anchor and holds its last 10 words
        assert seen(p, words) == {w for w in words[a - 9: a + 1] if w.startswith("z")}
        assert p.split("\n\n")[1].split() == words[a - 9: a + 1]
        assert p.startswith(SENTENCE_TEMPLATE.split("{context}")[0])
    # a 12-sentence story: the 12th end is its last word, after which nothing is heard
    words12, ends12 = make_story(12)
    aug12 = generate_augmentation(words12, ends12, "tiny", Fake(lambda p, c: "Yes."), every=4)
    assert [i.anchor for i in aug12.insertions] == [int(ends12[3]), int(ends12[7])]
    aug2 = generate_augmentation(words, ends, "tiny", Fake(lambda p, c: "Yes."), every=3)
    assert [i.anchor for i in aug2.insertions] == [int(e) for e in ends[2::3]]


def test_word_level_content_words_of_every_nth_sentence():
    words, ends = make_story(8)
    fake = Fake(lambda p, c: '1. The Doctor, "nurse"; [scalpel]\nblood')
    aug = generate_augmentation(words, ends, "tiny", fake, level="word", every=4, max_words=2, context_words=50)
    expect = [i for s in (3, 7) for i in range(s * 6, s * 6 + 6) if words[i] not in ("the", "and")]
    expect = [i for i in expect if i < len(words) - 1]
    assert [i.anchor for i in aug.insertions] == expect
    assert {i.text for i in aug.insertions} == {"Doctor, nurse"}
    (prompts, _), = fake.calls
    for a, p in zip(expect, prompts):
        assert f'"{words[a]}"' in p and not (seen(p, words) & set(words[a + 1:]))
    assert aug.provenance["max_words"] == 2 and aug.level == "word"


def test_content_word_heuristic_and_cleaning():
    assert [is_content_word(w) for w in ("hospital", "Bronx,", "the", "and", "it's", "ran", "on", "42", "didn't")] == \
        [True, True, False, False, False, True, False, False, False]
    assert clean_reply('  "The doctor [smiled]\nkindly." More text.', "sentence") == "The doctor smiled kindly."
    assert clean_reply("Association: A nurse came. Later", "sentence") == "A nurse came."
    assert clean_reply("the nurse was cut off", "sentence") == "the nurse was cut off."
    assert clean_reply("doctor, the intensive care unit, nurse", "word", 3) == "doctor, intensive care"
    for junk in ("", "  \n ", "...", "[ ]", '""', "!!"):
        assert clean_reply(junk, "sentence") == "" and clean_reply(junk, "word") == ""
    assert clean_reply("the and of", "word") == ""  # stop words only: nothing usable


def test_unusable_replies_are_retried_with_new_seeds_then_fail():
    words, ends = make_story(9)
    # the second anchor gets junk twice, then a sentence
    flaky = Fake(lambda p, c: "A memory." if c == 2 or words[int(ends[7])] not in p.split() else "[ ]\n")
    aug = generate_augmentation(words, ends, "tiny", flaky, every=4, seed=3, retries=2)
    assert [i.text for i in aug.insertions] == ["A memory."] * 2
    assert [len(p) for p, _ in flaky.calls] == [2, 1, 1]  # only the failed anchor is asked again
    assert [s for _, s in flaky.calls] == [attempt_seed(3, k) for k in range(3)]
    assert len({s for _, s in flaky.calls}) == 3

    junk = Fake(lambda p, c: '  "" [ ] ')
    with pytest.raises(GenerationError) as e:
        generate_augmentation(words, ends, "tinystory", junk, every=4, retries=1)
    msg = str(e.value)
    a = int(ends[3])
    assert "tinystory" in msg and f"anchor {a}" in msg and repr(words[a]) in msg and "'  \"\" [ ] '" in msg
    assert "after 2 tries" in msg and "1 other anchor" in msg and len(junk.calls) == 2


def test_bad_generator_and_arguments():
    words, ends = make_story(9)
    with pytest.raises(GenerationError, match="1 replies for 2 prompts"):
        generate_augmentation(words, ends, "tiny", lambda prompts, seed=0: ["x"])
    # a generator without a seed parameter is called with the prompts only
    aug = generate_augmentation(words, ends, "tiny", lambda prompts: ["Rain fell."] * len(prompts))
    assert [i.text for i in aug.insertions] == ["Rain fell."] * 2
    assert aug.provenance["generator"] == {"backend": "<lambda>"}
    with pytest.raises(ValueError, match=r"\{context\}"):
        generate_augmentation(words, ends, "tiny", Fake(lambda p, c: "x."), prompt_template="Say something")
    with pytest.raises(ValueError, match=r"\{context\} and \{word\}"):
        generate_augmentation(words, ends, "tiny", Fake(lambda p, c: "x"), level="word", prompt_template="{context}")
    with pytest.raises(ValueError, match="strictly increasing"):
        generate_augmentation(words, ends[::-1], "tiny", Fake(lambda p, c: "x."))
    with pytest.raises(ValueError, match="no sentence-level anchor"):
        generate_augmentation(words, ends[:2], "tiny", Fake(lambda p, c: "x."), every=4)
    with pytest.raises(ValueError, match="level"):
        generate_augmentation(words, ends, "tiny", Fake(lambda p, c: "x."), level="paragraph")


def test_chat_generator_provenance_and_file_roundtrip(stub, tmp_path):
    words, ends = make_story(9)
    gen = ChatGenerator(client(stub))
    aug = generate_augmentation(words, ends, "tiny", gen, every=4, seed=5)
    assert [i.text for i in aug.insertions] == ["The reporter remembered an old newspaper."] * 2
    assert stub.requests[0]["body"]["messages"][0]["role"] == "system"
    assert stub.requests[0]["body"]["seed"] == attempt_seed(5, 0)
    prov = aug.provenance
    assert prov["generator"]["endpoint"] == f"{stub.url}/v1/chat/completions"
    assert prov["generator"]["model"] == "stub-model"
    assert (prov["every"], prov["seed"], prov["level"], prov["context_words"]) == (4, 5, "sentence", 200)
    assert prov["prompt_template"] == SENTENCE_TEMPLATE
    path = fmt.save(aug, tmp_path / "aug.json", words)
    assert SECRET not in path.read_text()
    assert fmt.load(path, words) == aug


# ---------------------------------------------------------------- LMGenerator on a tiny model

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from assocjax.models import load_pretrained
    from assocjax.pipeline.assets import save_tokenizer

    from conftest import save_tiny

    words, ends = make_story(8)
    vocab = sorted(set(words)) + ["->"]
    folder = tmp_path_factory.mktemp("tiny_lm")
    save_tiny("gpt2", folder, vocab_size=len(vocab) + 2, n_positions=128, initializer_range=0.5)
    save_tokenizer(vocab, folder)  # a real (word-level) fast tokenizer: [UNK]=0, EOS=1
    model, tok = load_pretrained(folder)
    return model, tok, words, ends


def test_lm_generator_deterministic_per_seed_and_batch_invariant(tiny_lm):
    model, tok, words, _ = tiny_lm
    prompts = [" ".join(words[:5]) + " ->", " ".join(words[10:25]) + " ->", words[7] + " ->"]
    gen = LMGenerator(model, tok, max_new_tokens=6, temperature=1.0, top_p=0.9, batch_size=3)
    a, b, c = gen(prompts, seed=11), gen(prompts, seed=11), gen(prompts, seed=12)
    assert a == b and a != c
    assert all(isinstance(t, str) and t.strip() for t in a)
    assert set(" ".join(a).split()) <= set(tok.get_vocab())  # decoded model tokens
    wider = LMGenerator(model, tok, max_new_tokens=6, temperature=1.0, top_p=0.9, batch_size=3, pad_multiple=64)
    assert wider(prompts, seed=11) == a  # more left padding changes nothing
    with pytest.raises(ValueError, match="lower context_words"):
        gen([" ".join(words * 3)])


def test_lm_generator_makes_a_valid_augmentation(tiny_lm, tmp_path):
    model, tok, words, ends = tiny_lm
    gen = LMGenerator(model, tok, max_new_tokens=6, temperature=1.0, seed=0, name="tiny-gpt2")
    kw = dict(every=2, seed=4, context_words=12, prompt_template="{context} ->")
    aug = generate_augmentation(words, ends, "tiny", gen, **kw)
    assert aug == generate_augmentation(words, ends, "tiny", gen, **kw)  # same seed, same file
    assert len(aug.insertions) == 3 and all(i.text.strip() for i in aug.insertions)
    assert aug.provenance["generator"]["model"] == "tiny-gpt2"
    assert fmt.load(fmt.save(aug, tmp_path / "lm.json", words), words) == aug


# ---------------------------------------------------------------- scripts/augment.py

@pytest.fixture(scope="module")
def cli():
    with script("augment") as module:
        yield module


def write_align(path: Path, words, pause_every=6) -> Path:
    """A Gentle align.csv: 0.3 s words, 0.1 s gaps, 1.5 s pauses after every pause_every-th word."""
    t, rows = 0.0, []
    for i, w in enumerate(words):
        rows.append(f"{w},{w.lower()},{t:.2f},{t + 0.3:.2f}")
        t += 0.4 + (1.5 if (i + 1) % pause_every == 0 else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def stories(tmp_path):
    words, _ = make_story(9)
    story = write_align(tmp_path / "gentle" / "tiny" / "align.csv", words)
    pool = write_align(tmp_path / "gentle" / "other" / "align.csv",
                       [f"pool{c}" for c in "abcdefghijklmnopqrstuvwxyz"] * 3)
    return words, story, pool


def run_cli(cli, capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_generate_random_match_validate_show(cli, stub, stories, tmp_path, capsys, monkeypatch):
    words, story, pool = stories
    monkeypatch.setenv("ASSOCJAX_CLI_KEY", SECRET)
    out = tmp_path / "out" / "tiny-chat.json"
    rc, text, err = run_cli(cli, capsys, "generate", "--align", story, "--endpoint", stub.url + "/v1",
                            "--api-key-env", "ASSOCJAX_CLI_KEY", "--chat-model", "stub-model", "--every", "2",
                            "--seed", "1", "--out", out)
    assert rc == 0, err
    assert stub.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in out.read_text()
    aug = fmt.load(out, words)
    ends = np.arange(5, len(words), 6)  # pauses after every 6th word
    assert [i.anchor for i in aug.insertions] == [int(e) for e in ends[1::2] if e < len(words) - 1]
    assert aug.source == "model" and aug.story == "tiny"
    assert aug.provenance["sentence_boundaries"] == "pauses >= 0.8 s"

    rnd = tmp_path / "out" / "tiny-random.json"
    rc, _, err = run_cli(cli, capsys, "random-match", "--augmentation", out, "--align", story, "--pool-align", pool,
                         "--seed", "0", "--out", rnd)
    assert rc == 0, err
    control = fmt.load(rnd, words)
    assert [i.anchor for i in control.insertions] == [i.anchor for i in aug.insertions]
    assert control.n_inserted_words == aug.n_inserted_words and control.source == "random"
    assert all(w.startswith("pool") for i in control.insertions for w in i.text.split())
    rc, _, err = run_cli(cli, capsys, "random-match", "--augmentation", out, "--align", story, "--pool-align", story,
                         "--out", tmp_path / "out" / "self.json")
    assert rc == 2 and "the story 'tiny' itself" in err and not (tmp_path / "out" / "self.json").exists()

    rc, text, _ = run_cli(cli, capsys, "validate", out, "--align", story)
    assert rc == 0 and text.startswith("OK:")
    rc, text, _ = run_cli(cli, capsys, "validate", out, "--align", pool)
    assert rc == 1 and "ERROR" in text and "different story" in text
    broken = tmp_path / "broken.json"
    broken.write_text(out.read_text().replace('"anchor": 11', '"anchor": 999'))
    rc, text, _ = run_cli(cli, capsys, "validate", broken)
    assert rc == 1 and "out of range" in text

    rc, text, _ = run_cli(cli, capsys, "show", out, "--align", story, "--context", "2")
    assert rc == 0
    first = aug.insertions[0]
    assert "story: tiny" in text and f"sentence/model: {len(aug.insertions)}" in text
    assert f"{words[first.anchor - 1]} {words[first.anchor]} [{first.text}] {words[first.anchor + 1]}" in text


def test_cli_random_match_shuffled_round_trip(cli, stories, tmp_path, capsys):
    words, story, pool = stories
    ins = tuple(fmt.Insertion(a, t, "word", "model") for a, t in ((2, "doctor, nurse"), (5, "river"), (9, "snow, ice")))
    aug = fmt.Augmentation("tiny", fmt.story_hash(words), len(words), ins, {"generator": "test"})
    src = fmt.save(aug, tmp_path / "aug.json", words)
    out = tmp_path / "out" / "tiny-shuffled.json"
    rc, text, err = run_cli(cli, capsys, "random-match", "--kind", "shuffled", "--augmentation", src, "--align", story,
                            "--seed", "2", "--out", out)
    assert rc == 0, err
    control = fmt.load(out, words)
    assert control == shuffled_control(aug, words, seed=2)  # the library's control, written as is
    assert sorted(i.text for i in control.insertions) == sorted(i.text for i in aug.insertions)
    assert all(c.anchor == a.anchor and c.text != a.text for c, a in zip(control.insertions, aug.insertions))
    assert "3 shuffled insertions, every text moved" in text
    rc, text, _ = run_cli(cli, capsys, "validate", out, "--align", story)
    assert rc == 0 and text.startswith("OK:")
    bad = tmp_path / "out" / "never.json"
    rc, _, err = run_cli(cli, capsys, "random-match", "--kind", "shuffled", "--augmentation", src, "--align", story,
                         "--pool-align", pool, "--out", bad)
    assert rc == 2 and "--pool-align: only for --kind other-story" in err and not bad.exists()
    rc, _, err = run_cli(cli, capsys, "random-match", "--augmentation", src, "--align", story, "--out", bad)
    assert rc == 2 and "give --pool-align" in err and not bad.exists()  # other-story, the default, needs a pool


def test_cli_writes_nothing_on_generator_or_endpoint_error(cli, stub, stories, tmp_path, capsys):
    _, story, _ = stories
    out = tmp_path / "out" / "never.json"
    base = ["generate", "--align", story, "--endpoint", stub.url + "/v1", "--every", "2", "--out", out]
    stub.reply = lambda req: (200, completion("  [ ]  "), 0, {})
    rc, _, err = run_cli(cli, capsys, *base, "--retries", "1")
    assert rc == 2 and "no usable sentence-level association" in err and "story 'tiny'" in err
    assert "completed replies are kept in" in err  # the unusable replies were paid for too
    out.with_name(out.name + ".partial").unlink()
    stub.script = [(200, completion("A fine sentence."), 0, {})]  # the first anchor succeeds, then 400
    stub.reply = lambda req: (400, "bad request", 0, {})
    rc, _, err = run_cli(cli, capsys, *base)
    assert rc == 2 and "HTTP 400" in err and "1 completed replies are kept in" in err
    assert [p.name for p in out.parent.iterdir()] == ["never.json.partial"]  # no output, no temp file
    rc, _, err = run_cli(cli, capsys, "generate", "--align", story, "--out", out)
    assert rc == 2 and "exactly one backend" in err


def test_cli_generate_keeps_paid_replies_of_a_failed_run_and_resumes(cli, stub, stories, tmp_path, capsys):
    words, story, _ = stories
    out = tmp_path / "out" / "tiny.json"
    base = ["generate", "--align", story, "--endpoint", stub.url + "/v1", "--level", "word", "--every", "1",
            "--out", out]
    word = lambda n: "assoc" + "".join("abcdefghij"[int(d)] for d in str(n))  # noqa: E731  (letters only)
    stub.script = [(200, completion(word(i)), 0, {}) for i in (1, 2, 3)] + [(200, "<html>proxy</html>", 0, {})]
    rc, _, err = run_cli(cli, capsys, *base)
    assert rc == 2 and "not JSON" in err and "3 completed replies are kept in" in err
    partial = out.with_name("tiny.json.partial")
    assert not out.exists() and partial.is_file()
    n_first = len(stub.requests)
    stub.reply = lambda req: (200, completion(word(len(stub.requests))), 0, {})
    rc, text, err = run_cli(cli, capsys, *base)
    assert rc == 0, err
    aug = fmt.load(out, words)
    asked = len(stub.requests) - n_first
    assert asked == len(aug.insertions) - 3            # the 3 paid replies were not asked again
    assert [i.text for i in aug.insertions[:3]] == [word(1), word(2), word(3)]
    assert not partial.exists()                         # the output is complete: the partial file goes


def test_cli_import_inline_and_data_root(cli, stories, tmp_path, capsys):
    words, story, _ = stories
    inline = tmp_path / "notes.txt"
    inline.write_text(" ".join(words[:4]) + " [doctor, nurse] " + " ".join(words[4:]))
    out = tmp_path / "manual.json"
    rc, _, err = run_cli(cli, capsys, "import", inline, "--align", story, "--out", out)
    assert rc == 0, err
    aug = fmt.load(out, words)
    assert [(i.anchor, i.text, i.source) for i in aug.insertions] == [(3, "doctor, nurse", "manual")]
    # a minimal BIDS root whose stimuli/gentle holds the story
    root = tmp_path / "bids"
    (root / "stimuli").mkdir(parents=True)
    (root / "stimuli" / "gentle").symlink_to(tmp_path / "gentle")
    (root / "participants.tsv").write_text("participant_id\ttask\n")
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.6.0"}')
    rc, text, _ = run_cli(cli, capsys, "validate", out, "--data-root", root, "--story", "tiny")
    assert rc == 0 and text.startswith("OK:")
    rc, _, err = run_cli(cli, capsys, "validate", out, "--data-root", root, "--story", "nope")
    assert rc == 1


@pytest.mark.parametrize("text", ["", "completely other words here"])
def test_cli_import_error_names_the_input_file(cli, stories, tmp_path, capsys, text):
    """An inline text that does not fit the story (empty, another story's) is refused naming the file."""
    inline = tmp_path / "notes.txt"
    inline.write_text(text)
    rc, _, err = run_cli(cli, capsys, "import", inline, "--align", stories[1], "--out", tmp_path / "manual.json")
    assert rc == 2 and f"error: {inline}: inline text: " in err, err
    assert not (tmp_path / "manual.json").exists()


def test_cli_refuses_an_existing_out_unless_overwrite(cli, stub, stories, tmp_path, capsys):
    words, story, pool = stories
    hand_made = tmp_path / "aug.json"
    hand_made.write_text("a hand-made augmentation\n")
    inline = tmp_path / "notes.txt"
    inline.write_text(" ".join(words[:4]) + " [doctor, nurse] " + " ".join(words[4:]))
    commands = {
        "generate": ["generate", "--align", story, "--endpoint", stub.url + "/v1", "--every", "2"],
        "import": ["import", inline, "--align", story],
        "random-match": ["random-match", "--augmentation", hand_made, "--align", story, "--pool-align", pool],
    }
    for name, argv in commands.items():
        rc, _, err = run_cli(cli, capsys, *argv, "--out", hand_made)
        assert rc == 2 and f"--out {hand_made} exists: pass --overwrite" in err, (name, err)
        assert hand_made.read_text() == "a hand-made augmentation\n", name
    assert not stub.requests  # refused before any paid request
    rc, _, err = run_cli(cli, capsys, *commands["generate"], "--out", hand_made, "--overwrite")
    assert rc == 0, err
    assert fmt.load(hand_made, words).source == "model"
