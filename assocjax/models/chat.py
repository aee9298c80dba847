"""LLaMA-2-chat's prompt template (Meta's `llama/generation.py`: B_INST, B_SYS, E_SYS), as
text around a user turn: both the generator that asks a chat model for associations
(`augment.generate.LMGenerator`) and the tuning formats (`tune.prompts`) build on it, so it
lives with the models. bos is added as an id by the tokenizer, never written as text.
"""
from __future__ import annotations

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def llama2_system(system: str | None) -> str:
    """LLaMA-2-chat's system block "<<SYS>>\\n{system}\\n<</SYS>>\\n\\n", or "" without one."""
    return f"{B_SYS}{system}{E_SYS}" if system else ""


def llama2_chat(user: str, system: str | None = None) -> str:
    """One LLaMA-2-chat user turn, "[INST] {system block}{user} [/INST]"."""
    return f"{B_INST} {llama2_system(system)}{user} {E_INST}"
