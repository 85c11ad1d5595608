"""Shared fixtures of the evaluation tests."""

import pytest
import torch


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory):
    """A random tiny Llama with a score head, saved as `train rm` would (manifest and all)."""
    from transformers import LlamaForSequenceClassification

    from rlhfkit.lineage import write_manifest
    from rlhfkit.models import tiny_model

    causal, tok = tiny_model()
    config = causal.config
    config.num_labels = 1
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # rewards that spread out
    folder = tmp_path_factory.mktemp("rm") / "final"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_manifest(folder, kind="reward_model", inputs={}, config={})
    return folder, model.eval(), tok
