"""Model sources: the bundled GGUF conversion is exact, cached, and nothing is downloaded."""

import time

import pytest
import torch

from rlhfkit.errors import UserError
from rlhfkit.models import load_gguf_model, load_model, pull, resolve, tiny_model

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nMy order is late.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
]


def test_tiny_model_builds_in_seconds_with_the_real_tokenizer():
    started = time.time()
    model, tok = tiny_model()
    assert time.time() - started < 20
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    assert model.config.num_hidden_layers == 2
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], 49152)
    same, _ = tiny_model()
    assert torch.equal(model.model.embed_tokens.weight, same.model.embed_tokens.weight)


@pytest.mark.slow
def test_converted_checkpoint_matches_gguf_logits():
    folder = pull("smollm2-135m-instruct")
    assert (folder / "model.safetensors").exists() and (folder / "chat_template.jinja").exists()
    started = time.time()
    converted, tok = load_model("smollm2-135m-instruct")
    load_seconds = time.time() - started
    assert load_seconds < 15, f"loading the converted model took {load_seconds:.1f} s"
    assert not getattr(converted, "is_quantized", False)
    reference = load_gguf_model("smollm2-135m-instruct")
    assert reference.is_quantized  # the GGUF path really is the one transformers refuses to train
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            a = converted(ids).logits
            b = reference(ids).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_converted_model_trains():
    model, tok = load_model("smollm2-135m-instruct")
    ids = tok("Best regards, the team", return_tensors="pt")["input_ids"]
    loss = model(ids, labels=ids).loss
    loss.backward()
    grad = model.lm_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.norm() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss: it is the real one
        model.lm_head.weight -= 1e-3 * grad / grad.norm()
        assert model(ids, labels=ids).loss < loss


def test_unknown_model_is_a_clear_error_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not a bundled alias") as info:
        resolve("someone/not-a-cached-model")
    assert "never downloads" in info.value.hint
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        resolve(str(tmp_path))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"0")
    with pytest.raises(UserError, match="a folder, not a file"):
        resolve(str(file))


def test_local_folder_loads(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert loaded_tok.chat_template == tok.chat_template
