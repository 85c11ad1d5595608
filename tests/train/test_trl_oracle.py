"""TRL 1.16 as the oracle: the same data and weights through a real TRL trainer give the
same loss as rlhfkit's tokenization + scoring + losses, to 1e-5 (DPO: to what fp32 rounding of
the log-probs can move each loss)."""

import copy
import warnings

import datasets
import pytest
import torch
import trl  # noqa: F401

from rlhfkit.data import Dataset, Format, Kind
from rlhfkit.models import tiny_model
from rlhfkit.train.batches import separate, shared_prompt
from rlhfkit.train.losses import dpo_loss, reward_loss, sft_loss
from rlhfkit.train.reward_model import score_pairs
from rlhfkit.train.scoring import CompletionScorer, sequence_logps, token_logps_of
from rlhfkit.train.tokenize import tokenize_dataset

pytestmark = pytest.mark.slow  # builds real TRL trainers, seconds each


def conv(role, text):
    return [{"role": role, "content": text}]


PREFS = [
    {"prompt": conv("user", "My kettle arrived broken."),
     "chosen": conv("assistant", "Sorry! A replacement ships today.\n\nBest regards"),
     "rejected": conv("assistant", "I think maybe you could try to fix it?")},
    {"prompt": conv("user", "Where is order #123?"),
     "chosen": conv("assistant", "It arrives tomorrow; tracking is in your inbox."),
     "rejected": conv("assistant", "No idea.")},
    {"prompt": conv("user", "Cancel my order please."),
     "chosen": conv("assistant", "Done, it is cancelled and you were not charged."),
     "rejected": conv("assistant", "Perhaps later.")},
    {"prompt": conv("user", "Refund?"),
     "chosen": conv("assistant", "Issued today; five working days."),
     "rejected": conv("assistant", "Maybe, I am not sure. Possibly next month or so.")},
]
TEXT_PREFS = [
    {"prompt": "Q: is the sky blue?\nA:", "chosen": " Yes, on a clear day.", "rejected": " No."},
    {"prompt": "Q: two plus two?\nA:", "chosen": " Four.", "rejected": " Five, I think."},
]


def args(cls, tmp_path, **kw):
    kw = {"per_device_train_batch_size": len(PREFS), **kw}
    return cls(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[],
               gradient_checkpointing=False, **kw)


def trl_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def ours(rows, fmt, tok, kind="preference"):
    dataset = Dataset(path=None, kind=Kind(fmt, isinstance(rows[0]["prompt"], list)), rows=rows,
                      lines=list(range(1, len(rows) + 1)))
    return tokenize_dataset(tok, dataset, 1024, kind)[0]


@pytest.mark.parametrize(
    ("loss_type", "label_smoothing", "rows"),
    [("sigmoid", 0.0, PREFS), ("ipo", 0.0, PREFS), ("hinge", 0.0, PREFS),
     ("robust", 0.1, PREFS), ("sigmoid", 0.0, TEXT_PREFS)],
)
def test_dpo_loss_matches_trl(tmp_path, loss_type, label_smoothing, rows):
    from trl import DPOConfig, DPOTrainer

    policy, tok = tiny_model(seed=0)
    reference, _ = tiny_model(seed=1)  # a different reference, so the loss is not trivially log 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(
            model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference),
            args=args(DPOConfig, tmp_path, loss_type=[loss_type], beta=0.2,
                      label_smoothing=label_smoothing, precompute_ref_log_probs=False,
                      per_device_train_batch_size=len(rows)),
            train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
        )
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, trl_batch(trainer))

    examples = ours(rows, Format.PREFERENCE, tok)
    n = len(examples)
    for layout in (shared_prompt, separate):  # one pass over each prompt, or one per completion
        inputs = layout(examples, tok.pad_token_id)
        with torch.no_grad():
            pol = sequence_logps(CompletionScorer(policy.eval()), inputs).chunk(2)
            ref = sequence_logps(CompletionScorer(reference.eval()), inputs).chunk(2)
        logps = [t.clone().requires_grad_() for t in (*pol, *ref)]
        losses, _, _ = dpo_loss(*logps, beta=0.2, loss_type=loss_type,
                                label_smoothing=label_smoothing,
                                chosen_lengths=inputs.n_scored[:n],
                                rejected_lengths=inputs.n_scored[n:])
        # fp32 rounding: each summed log-prob (~15 tokens of ~-11) is good to about one ulp of
        # its size, and the loss moves by its gradient times that (IPO's square amplifies it
        # fivefold). Measured, AVX-512 and AVX2 kernels: at most half of this bound
        grads = torch.autograd.grad(losses.mean(), logps)
        rounding = torch.finfo(torch.float32).eps * sum(
            (g.abs() * lp.abs()).sum().item() for g, lp in zip(grads, logps, strict=True))
        diff = abs(losses.mean().item() - expected.item())
        assert diff < 4 * rounding, (layout.__name__, diff, rounding)
    assert expected.item() != pytest.approx(0.6931, abs=1e-3)


@pytest.mark.parametrize(("margin", "center"), [(False, None), (True, None), (False, 0.05)])
def test_reward_loss_matches_trl(tmp_path, margin, center):
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    base, tok = tiny_model(seed=0)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    rows = [dict(r, margin=0.1 * i) if margin else dict(r) for i, r in enumerate(PREFS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RewardTrainer(
            model=copy.deepcopy(model),
            args=args(RewardConfig, tmp_path / "out", center_rewards_coefficient=center),
            train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
        )
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, trl_batch(trainer))

    examples = ours(rows, Format.PREFERENCE, tok)
    with torch.no_grad():
        rewards = score_pairs(model.eval(), examples, tok.pad_token_id, "cpu")
    margins = torch.tensor([ex.margin for ex in examples]) if margin else None
    loss = reward_loss(rewards[:, 0], rewards[:, 1], margins, center or 0.0)
    assert abs(loss.item() - expected.item()) < 1e-5


@pytest.mark.parametrize("standard", [False, True])
def test_sft_loss_matches_trl(tmp_path, standard):
    from trl import SFTConfig, SFTTrainer

    model, tok = tiny_model(seed=0)
    if standard:
        rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in TEXT_PREFS]
    else:
        rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in PREFS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SFTTrainer(
            model=copy.deepcopy(model),
            args=args(SFTConfig, tmp_path, per_device_train_batch_size=len(rows)),
            train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
        )
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, trl_batch(trainer))

    examples = ours(rows, Format.PROMPT_COMPLETION, tok, kind="sft")
    inputs = separate(examples, tok.pad_token_id)
    with torch.no_grad():
        loss = sft_loss(token_logps_of(CompletionScorer(model.eval()), inputs))
    assert abs(loss.item() - expected.item()) < 1e-5
