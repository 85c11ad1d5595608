"""Prompts as the samplers tokenise them: one rule for candidates, PPO and evaluation."""

from rlhfkit.train.tokenize import prompt_ids
from tests.conftest import messages


def test_prompt_ids_use_the_chat_template_for_messages_only(tiny):
    _, tok = tiny
    text = tok.decode(prompt_ids(tok, messages(("user", "hi"))))
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(prompt_ids(tok, "plain text")) == "plain text"
