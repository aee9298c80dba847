"""Completed chat replies kept on disk while an augmentation is generated, so a failed run's
paid replies are reused by the next one (`ChatClient(..., replies=ReplyStore(path))`).

The file (JSON, format "assocjax-chat-replies") maps a digest of each request (URL, model,
messages, sampling settings, seed; never the API key) to its reply text, and is rewritten
atomically after every reply. `scripts/augment.py generate` keeps it beside its output
(`replies_path(out)`) and removes it once the output is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import atomic_write_text

REPLIES_FORMAT = "assocjax-chat-replies"


def replies_path(out: str | os.PathLike) -> Path:
    """The partial file of completed replies kept beside an output file until it is written."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


class ReplyStore:
    """Completed replies by request digest, in a JSON file rewritten atomically after each one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._replies: dict[str, str] = {}
        if self.path.exists():
            try:
                obj = json.loads(self.path.read_text(encoding="utf-8"))
                if obj.get("format") != REPLIES_FORMAT or not isinstance(obj.get("replies"), dict):
                    raise ValueError(f"not an {REPLIES_FORMAT} file")
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                raise ValueError(f"{self.path}: cannot reuse this partial replies file ({e}); move it away to start "
                                 "afresh") from None
            self._replies = {str(k): str(v) for k, v in obj["replies"].items()}

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, reply: str) -> None:
        self._replies[key] = reply
        atomic_write_text(self.path, json.dumps({"format": REPLIES_FORMAT, "version": 1, "replies": self._replies},
                                                ensure_ascii=False) + "\n")

    def remove(self) -> None:
        """Delete the file (the output it was kept for is written)."""
        self.path.unlink(missing_ok=True)
        self._replies = {}
