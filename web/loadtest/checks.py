"""What the load tester checks after a run: each conversation's history is exactly its turns."""

from __future__ import annotations

import json

SIMULATED_PREFIX = 'Simulated reply to "'
"""How the OpenAI simulator's answers begin: such an answer must quote its prompt."""


def history_problem(index: int, body: bytes, prompts: list[str]) -> str | None:
    """What is wrong with conversation ``index``'s history ``body``; None if it is right.

    Right means: exactly ``prompts`` as user messages, in order, each followed by a non-empty
    assistant answer, which quotes its prompt if it is a simulated answer.
    """
    try:
        messages = json.loads(body)["messages"]
        pairs = [(message["role"], message["content"]) for message in messages]
    except (ValueError, KeyError, TypeError):
        return f"conv {index}: history is not {{messages: [{{role, content}}...]}}"
    if len(pairs) != 2 * len(prompts):
        return f"conv {index}: {len(pairs)} messages in the history, expected {2 * len(prompts)}"
    for position, (role, content) in enumerate(pairs):
        prompt = prompts[position // 2]
        if position % 2 == 0:
            if role != "user" or content != prompt:
                return f"conv {index}: message {position} is {role} {content!r}, not {prompt!r}"
        elif role != "assistant" or not isinstance(content, str) or not content:
            return f"conv {index}: message {position} is {role} {content!r}, expected an answer"
        elif content.startswith(SIMULATED_PREFIX) and f'"{prompt}"' not in content:
            return f"conv {index}: answer {position} {content[:120]!r} does not quote {prompt!r}"
    return None
