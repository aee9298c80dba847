"""A minimal OpenAI-compatible chat-completions client (standard library only).

    client = ChatClient("https://api.openai.com/v1", model="gpt-4")   # key from $OPENAI_API_KEY
    text = client.complete([{"role": "user", "content": "Say hi"}])

URL: requests go to `{base_url}/chat/completions`, with base_url exactly as given (one
trailing slash dropped): pass ".../v1" for OpenAI and most servers (vLLM, llama.cpp,
Ollama's OpenAI API), or the bare host for a server that serves `/chat/completions` at its
root. A base_url already ending in `/chat/completions` is used as it is.

Failures: timeouts, connection errors, HTTP 429 and 5xx are retried `max_retries` times
with exponential backoff (backoff_s * 2**i, a Retry-After header may lengthen it, capped at
max_backoff_s; optional seeded jitter); other 4xx fail at once. Every failure raises
`ChatError` naming the URL, the status and a snippet of the body. The API key is sent in the
Authorization header only: it is never part of `describe()`, `repr()` or an error message.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Callable

RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
SNIPPET_CHARS = 300


class ChatError(RuntimeError):
    """A chat-completions request that failed for good (after any retries)."""


class ChatClient:
    """POST chat-completions requests to one endpoint and model (see the module docstring).

    api_key: the key itself; when None it is read from the environment variable `api_key_env`
    (no key at all is allowed: local servers often need none, and the request then carries no
    Authorization header). temperature / max_tokens / seed are sent only when not None.
    sleep: the function that waits between tries (tests pass a recorder).
    """

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "gpt-4", *,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 30.0, max_retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, jitter: float = 0.0, jitter_seed: int = 0,
                 temperature: float | None = 0.7, max_tokens: int | None = 64,
                 sleep: Callable[[float], None] = time.sleep):
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
        status, body = self._post(json.dumps(payload).encode("utf-8"))
        return self._content(status, body)

    def _request(self, data: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return urllib.request.Request(self.url, data=data, headers=headers, method="POST")

    def _post(self, data: bytes) -> tuple[int, str]:
        tries = self.max_retries + 1
        for attempt in range(tries):
            retry_after = None
            try:
                with urllib.request.urlopen(self._request(data), timeout=self.timeout_s) as resp:
                    return resp.status, resp.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as e:
                body = _read(e)
                if e.code not in RETRY_STATUSES:
                    raise ChatError(self._say(f"HTTP {e.code}", body, attempt + 1, retried=False)) from None
                what, retry_after = f"HTTP {e.code}", _retry_after(e.headers)
            except (TimeoutError, socket.timeout):
                what, body = f"no reply within the {self.timeout_s:g} s timeout", ""
            except urllib.error.URLError as e:  # connection refused, DNS, TLS, timeout while connecting
                timed_out = isinstance(e.reason, (TimeoutError, socket.timeout))
                what = (f"no reply within the {self.timeout_s:g} s timeout" if timed_out
                        else f"connection error ({e.reason})")
                body = ""
            except (ConnectionError, http.client.HTTPException) as e:  # reset, dropped mid-reply
                what, body = f"connection error ({type(e).__name__}: {e})", ""
            if attempt + 1 == tries:
                raise ChatError(self._say(what, body, tries, retried=True))
            self._sleep(self.delay(attempt, retry_after))
        raise AssertionError("unreachable")

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
