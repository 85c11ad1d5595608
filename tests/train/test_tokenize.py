"""Prompts as the samplers tokenise them: one rule for candidates, PPO and evaluation."""

from rlhfkit.data import Dataset, Format, Kind
from rlhfkit.train.batches import separate
from rlhfkit.train.tokenize import prompt_ids, tokenize_dataset
from tests.conftest import messages


def test_prompt_ids_use_the_chat_template_for_messages_only(tiny):
    _, tok = tiny
    text = tok.decode(prompt_ids(tok, messages(("user", "hi"))))
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(prompt_ids(tok, "plain text")) == "plain text"


def test_multi_turn_sft_scores_assistant_turns_only(tiny):
    _, tok = tiny
    convo = messages(("user", "Hi there"), ("assistant", "Hello! How can I help?"),
                     ("user", "Where is my parcel?"), ("assistant", "It arrives Monday."))
    ds = Dataset(None, Kind(Format.LANGUAGE_MODELING, True), [{"messages": convo}], [1])
    examples, _ = tokenize_dataset(tok, ds, 512, "sft")
    scored = tok.decode(separate(examples, tok.pad_token_id).targets)
    assert "Hello! How can I help?" in scored and "It arrives Monday." in scored
    assert "Where is my parcel" not in scored and "Hi there" not in scored
