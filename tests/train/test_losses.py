"""The loss functions by hand, and their invariances."""

import math

import pytest
import torch

from rlhfkit.train import configs, losses
from rlhfkit.train.losses import dpo_loss, reward_loss, sft_loss, sum_per_sequence, token_logps


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_sigmoid_by_hand():
    # h = (-1 - -2) - (-3 - -2.5) = 1.5; beta 0.5 -> -log sigmoid(0.75)
    losses_, chosen, rejected = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5)
    assert losses_.item() == pytest.approx(math.log1p(math.exp(-0.75)))
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.25)


def test_conservative_and_robust_by_hand():
    eps, z = 0.2, 0.75
    cdpo, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, label_smoothing=eps)
    nls = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log sigmoid(x)
    assert cdpo.item() == pytest.approx((1 - eps) * nls(z) + eps * nls(-z))
    robust, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, loss_type="robust",
                            label_smoothing=eps)
    assert robust.item() == pytest.approx(((1 - eps) * nls(z) - eps * nls(-z)) / (1 - 2 * eps))


def test_hinge_and_ipo_by_hand():
    hinge, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, loss_type="hinge")
    assert hinge.item() == pytest.approx(0.25)  # max(0, 1 - 0.5 * 1.5)
    ipo, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx((1.5 - 1.0) ** 2)  # (h - 1/(2 beta))^2
    per_token, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, loss_type="ipo",
                               chosen_lengths=t(2.0), rejected_lengths=t(4.0))
    assert per_token.item() == pytest.approx((0.5 - (-0.125) - 1.0) ** 2)


def test_dpo_invariant_to_a_shared_offset_per_example():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))
    base, _, _ = dpo_loss(pc, pr, rc, rr)
    shift = torch.randn(5, generator=g, dtype=torch.float64)
    moved, _, _ = dpo_loss(pc + shift, pr + shift, rc + shift, rr + shift)
    torch.testing.assert_close(base, moved)
    swapped, _, _ = dpo_loss(pr, pc, rr, rc)  # swapping the pair flips the sign of h
    torch.testing.assert_close(base - swapped, -(pc - rc - pr + rr) * 0.1)


def test_reward_loss_by_hand_and_shift_invariance():
    assert reward_loss(t(2.0), t(1.0)).item() == pytest.approx(math.log1p(math.exp(-1.0)))
    assert reward_loss(t(2.0), t(1.0), margin=t(1.0)).item() == pytest.approx(math.log(2))
    centred = reward_loss(t(2.0), t(1.0), center_coef=0.1).item()
    assert centred == pytest.approx(math.log1p(math.exp(-1.0)) + 0.1 * 9)
    r = torch.randn(6, dtype=torch.float64)
    s = torch.randn(6, dtype=torch.float64)
    assert reward_loss(r, s).item() == pytest.approx(reward_loss(r + 7, s + 7).item())


def test_token_logps_and_sft_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = [1/4, 3/4]
    assert token_logps(logits, torch.tensor([1])).item() == pytest.approx(math.log(0.75))
    lp = torch.log(torch.tensor([0.5, 0.25]))
    assert sft_loss(lp).item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert sft_loss(lp, n_tokens=4).item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 4)
    sums = sum_per_sequence(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 2]), 3)
    assert sums.tolist() == [3.0, 0.0, 3.0]


def test_sft_loss_of_shards_averages_to_the_global_loss():
    lp = -torch.rand(10, dtype=torch.float64)
    whole = sft_loss(lp)
    halves = [sft_loss(lp[:3], n_tokens=10 / 2), sft_loss(lp[3:], n_tokens=10 / 2)]
    assert whole.item() == pytest.approx(sum(h.item() for h in halves) / 2)


def test_unknown_loss_type_and_bad_smoothing():
    with pytest.raises(ValueError, match="unknown DPO loss"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="robust", label_smoothing=0.5)


def test_losses_module_imports_only_torch():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(losses))
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"torch", "__future__"}
    assert configs.DPO_LOSS_TYPES == losses.DPO_LOSS_TYPES
