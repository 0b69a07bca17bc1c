"""Render a chat conversation into the one text that is encoded.

Rendering (decided for truncating encoders such as MiniLM, which read only the first ~256 word
pieces)::

    <last user turn, untagged>

    [system] <system prompt>

    [assistant] <most recent earlier turn>

    [user] <the turn before it>
    ...

* The **last user turn comes first and untagged**: it is what the routed model must answer, so
  it must survive truncation, and a one-turn chat renders to exactly its text -- the same string
  as the plain prompts the router was trained on.
* The **system prompt** comes next: it sets the task (persona, format, tools) for every turn.
* **Earlier turns follow most-recent-first**, so the closest context is kept when the tail is cut.

Turns are separated by a blank line and tagged ``[role]``. Multi-part contents (OpenAI
``[{"type": "text", "text": ...}, ...]``) keep their text parts; other parts become ``<image>``
etc. Tool calls without text are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from router.errors import ConfigError

__all__ = ["render_conversation"]


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if part.get("type", "text") == "text":
                    parts.append(str(part.get("text", "")))
                else:
                    parts.append(f"<{part.get('type')}>")
        return "\n".join(p for p in parts if p)
    raise ConfigError(f"Message content must be a str or a list of parts, got {type(content).__name__}.")


def render_conversation(messages: Sequence[dict[str, Any]] | str) -> str:
    """Messages (list of ``{"role", "content"}`` or its JSON string) -> one text to encode.

    Example:
        >>> render_conversation([{"role": "user", "content": "What is 2+2?"}])
        'What is 2+2?'
        >>> print(render_conversation([
        ...     {"role": "system", "content": "Be brief."},
        ...     {"role": "user", "content": "Hi"},
        ...     {"role": "assistant", "content": "Hello!"},
        ...     {"role": "user", "content": "Prove Fermat's last theorem."}]))
        Prove Fermat's last theorem.
        <BLANKLINE>
        [system] Be brief.
        <BLANKLINE>
        [assistant] Hello!
        <BLANKLINE>
        [user] Hi
    """
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"messages is a str but not JSON ({exc}); pass a list of message dicts.") from exc
    if not isinstance(messages, Sequence) or not messages:
        raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise ConfigError(f"Message {i} must be a dict with a 'role' key, got {msg!r:.80}.")
        turns.append((str(msg["role"]), _content_text(msg.get("content"))))
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=len(turns) - 1)
    head = turns[last_user][1]
    system = [f"[{r}] {t}" for i, (r, t) in enumerate(turns) if r in ("system", "developer") and i != last_user and t]
    rest = [
        f"[{r}] {t}"
        for i, (r, t) in reversed(list(enumerate(turns)))
        if i != last_user and r not in ("system", "developer") and t
    ]
    return "\n\n".join([head, *system, *rest])
