"""Chat templates of the model families the cards come from, as Jinja text for tokenizer_config.json.

A card names its family (`"tokenizer": {"chat_template": "chatml"}`) and declares the family's special
tokens at their published ids, so a materialised directory renders conversations the way the real
model's tokenizer does (the chat-completions route of a server needs one). The templates are the
published ones, shortened to what a benchmark sends: system, user and assistant messages, no tools.
Pure text: nothing here imports transformers.
"""

from __future__ import annotations

# ChatML, as Qwen2.5 writes it: a default system message when the conversation has none.
_QWEN2_5 = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ChatML without a default system message (lokaal-bench's own tiny card uses it).
_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen3: ChatML; an earlier answer's reasoning (<think>...</think>) is left out of the history.
_QWEN3 = (
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# DeepSeek-R1 distills: the answer opens with <think>; earlier answers keep only what follows </think>.
_DEEPSEEK_R1 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- message['content'] }}"
    "{%- elif message['role'] == 'user' %}{{- '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}"
)

_LLAMA_3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_MISTRAL = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

_GEMMA_2 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

_PHI_3 = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML,
    "qwen2.5": _QWEN2_5,
    "qwen3": _QWEN3,
    "deepseek-r1": _DEEPSEEK_R1,
    "llama-3": _LLAMA_3,
    "mistral": _MISTRAL,
    "gemma-2": _GEMMA_2,
    "phi-3": _PHI_3,
}


def chat_template(family: str | None) -> str | None:
    """The Jinja text of a family's template; None for none; ValueError for a family not known."""
    if family is None:
        return None
    if family not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template family {family!r}; known: {', '.join(sorted(CHAT_TEMPLATES))}")
    return CHAT_TEMPLATES[family]
