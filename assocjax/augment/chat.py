"""A minimal OpenAI-compatible chat-completions client (HTTP through the standard library).

    client = ChatClient("https://api.openai.com/v1", model="gpt-4")   # key from $OPENAI_API_KEY
    text = client.complete([{"role": "user", "content": "Say hi"}])

URL: requests go to `{base_url}/chat/completions`, with base_url exactly as given (one
trailing slash dropped): pass ".../v1" for OpenAI and most servers (vLLM, llama.cpp,
Ollama's OpenAI API), or the bare host for a server that serves `/chat/completions` at its
root. A base_url already ending in `/chat/completions` is used as it is.

Time limit: `timeout_s` bounds each whole request (connecting, sending, the reply's
headers and body). urllib's own timeout bounds each socket operation only, so a server that
sends a byte now and then would hold a request open forever; a timer shuts the request's
socket down when the limit passes (`_Deadline`), which ends any blocked read.

Failures: timeouts, connection errors, HTTP 429 and 5xx are retried `max_retries` times
with exponential backoff (backoff_s * 2**i, a Retry-After header may lengthen it, capped at
max_backoff_s; optional seeded jitter); other 4xx fail at once. Every failure raises
`ChatError` naming the URL, the status and a snippet of the body. The API key is sent in the
Authorization header only: it is never part of `describe()`, `repr()` or an error message.

Resuming: with `replies=ReplyStore(path)` (`assocjax.augment.replies`) every completed reply
is written to that file as it arrives, under a digest of the URL and the whole request
(model, messages, sampling settings, seed; never the key), and a request already answered
there is not sent again: a run that fails at request 15 keeps the 14 paid replies, and the
rerun asks only for the rest.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

from ..fingerprint import digest
from .replies import ReplyStore

RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
SNIPPET_CHARS = 300


class ChatError(RuntimeError):
    """A chat-completions request that failed for good (after any retries)."""


class _Retry(Exception):
    """A failed try that may be tried again: what went wrong, the body, the server's Retry-After."""

    def __init__(self, what: str, body: str = "", retry_after: float | None = None):
        super().__init__(what)
        self.what, self.body, self.retry_after = what, body, retry_after


class _Deadline:
    """A time limit on one whole request: at `seconds` the request's sockets are shut down,
    which wakes any read blocked on them (see the module docstring)."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                _shutdown(s)

    def watch(self, sock: socket.socket) -> socket.socket:
        """Register a new connection's socket. A duplicate of its descriptor is kept: TLS takes
        the socket object over, but shutting down any descriptor of it ends the connection."""
        dup = sock.dup()
        with self._lock:
            self._socks.append(dup)
            if self.expired:
                _shutdown(dup)
        return sock

    def opener(self) -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(_WatchedHTTP(self), _WatchedHTTPS(self))


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass


class _Watched:
    """urllib handler mixin: every connection it opens registers its socket with the deadline."""

    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        deadline = self._deadline

        def connection(*args, **kw):
            conn = http_class(*args, **kw)
            create = conn._create_connection  # socket.create_connection, kept per connection
            conn._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))
            return conn

        return super().do_open(connection, req, **kwargs)


class _WatchedHTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


class ChatClient:
    """POST chat-completions requests to one endpoint and model (see the module docstring).

    api_key: the key itself; when None it is read from the environment variable `api_key_env`
    (no key at all is allowed: local servers often need none, and the request then carries no
    Authorization header). temperature / max_tokens / seed are sent only when not None.
    sleep: the function that waits between tries (tests pass a recorder). replies: a
    `ReplyStore` that keeps every completed reply and answers repeated requests from it.
    """

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "gpt-4", *,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 30.0, max_retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, jitter: float = 0.0, jitter_seed: int = 0,
                 temperature: float | None = 0.7, max_tokens: int | None = 64,
                 sleep: Callable[[float], None] = time.sleep, replies: ReplyStore | None = None):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://; got {base_url!r}")
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0 or not 0 <= jitter <= 1:
            raise ValueError(f"need max_retries >= 0, timeout_s > 0, backoff_s >= 0, 0 <= jitter <= 1; got "
                             f"{max_retries}, {timeout_s}, {backoff_s}, {jitter}")
        base = base_url[:-1] if base_url.endswith("/") else base_url
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.model = model
        self.timeout_s, self.max_retries, self.backoff_s = float(timeout_s), int(max_retries), float(backoff_s)
        self.max_backoff_s, self.jitter = float(max_backoff_s), float(jitter)
        self.temperature, self.max_tokens = temperature, max_tokens
        self.api_key_env = api_key_env
        self._key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        self._rng = random.Random(jitter_seed)  # per client, so jittered delays repeat run to run
        self._sleep = sleep
        self.replies = replies

    def __repr__(self) -> str:
        return f"ChatClient(url={self.url!r}, model={self.model!r}, key={'set' if self._key else 'none'})"

    def describe(self) -> dict:
        """What produced the text, for provenance (never the key)."""
        return {"backend": "chat-completions", "endpoint": self.url, "model": self.model,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "api_key_env": self.api_key_env}

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try attempt + 1 (attempt counts from 0)."""
        d = self.backoff_s * 2 ** attempt
        if self.jitter:
            d *= 1 + self.jitter * self._rng.random()
        if retry_after is not None:
            d = max(d, retry_after)
        return min(d, self.max_backoff_s)

    def complete(self, messages: list[dict], seed: int | None = None) -> str:
        """The reply text (choices[0].message.content) to `messages`."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                     for m in messages):
            raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
        payload = {"model": self.model, "messages": messages}
        for name, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens), ("seed", seed)):
            if value is not None:
                payload[name] = value
        key = digest({"url": self.url, "request": payload})
        if self.replies is not None and (kept := self.replies.get(key)) is not None:
            return kept
        status, body = self._post(json.dumps(payload).encode("utf-8"))
        content = self._content(status, body)
        if self.replies is not None:
            self.replies.put(key, content)
        return content

    def _request(self, data: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return urllib.request.Request(self.url, data=data, headers=headers, method="POST")

    def _post(self, data: bytes) -> tuple[int, str]:
        tries = self.max_retries + 1
        for attempt in range(tries):
            try:
                return self._try(data, attempt)
            except _Retry as r:
                if attempt + 1 == tries:
                    raise ChatError(self._say(r.what, r.body, tries, retried=True)) from None
                self._sleep(self.delay(attempt, r.retry_after))
        raise AssertionError("unreachable")

    def _try(self, data: bytes, attempt: int) -> tuple[int, str]:
        """(status, body) of one request within the whole-request deadline; _Retry for what may
        be tried again, ChatError for what may not."""
        late = f"no reply within the {self.timeout_s:g} s timeout"
        with _Deadline(self.timeout_s) as deadline:
            try:
                with deadline.opener().open(self._request(data), timeout=self.timeout_s) as resp:
                    reply = resp.status, resp.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as e:
                body = _read(e)
                if deadline.expired:
                    raise _Retry(late) from None
                if e.code not in RETRY_STATUSES:
                    raise ChatError(self._say(f"HTTP {e.code}", body, attempt + 1, retried=False)) from None
                raise _Retry(f"HTTP {e.code}", body, _retry_after(e.headers)) from None
            except TimeoutError:  # socket.timeout is TimeoutError
                raise _Retry(late) from None
            except urllib.error.URLError as e:  # connection refused, DNS, TLS, timeout while connecting
                timed_out = deadline.expired or isinstance(e.reason, TimeoutError)
                raise _Retry(late if timed_out else f"connection error ({e.reason})") from None
            except (OSError, http.client.HTTPException) as e:  # reset, dropped mid-reply, shut by the deadline
                if not (deadline.expired or isinstance(e, (ConnectionError, http.client.HTTPException))):
                    raise
                raise _Retry(late if deadline.expired else f"connection error ({type(e).__name__}: {e})") from None
            if deadline.expired:  # the reply ended only because the deadline shut the socket
                raise _Retry(late)
            return reply

    def _content(self, status: int, body: str) -> str:
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            raise ChatError(self._say(f"HTTP {status}, reply is not JSON ({e.msg})", body, None)) from None
        try:
            content = obj["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ChatError(self._say(f"HTTP {status}, reply has no choices[0].message.content", body, None)) from None
        if not isinstance(content, str):
            raise ChatError(self._say(f"HTTP {status}, choices[0].message.content is {type(content).__name__}, "
                                      "not text", body, None))
        return content

    def _say(self, what: str, body: str, tries: int | None, retried: bool = False) -> str:
        snippet = body[:SNIPPET_CHARS] + ("..." if len(body) > SNIPPET_CHARS else "")
        if self._key:  # a server that echoes the request must not leak the key into logs
            snippet = snippet.replace(self._key, "***")
        after = "" if tries is None else (f" after {tries} tries" if retried else " (not retried)")
        return f"chat request to {self.url} (model {self.model!r}) failed{after}: {what}; body: {snippet!r}"


def _read(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        return ""


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After"))) if headers and headers.get("Retry-After") else None
    except ValueError:  # an HTTP date: ignore it and use our own backoff
        return None
