"""Stage 3's math against values worked out by hand."""

import math

import pytest
import torch

from rlhfkit.decode import entropy
from rlhfkit.train import losses as L
from rlhfkit.train.ppo import AdaptiveKL


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_by_hand():
    # gamma 1, lambda 0.5: deltas 0.6, 0.2, -0.3 from the end back
    adv, ret = L.gae(t([0, 0, 1]), t([0.5, 0.2, 0.4]), t([1, 1, 1]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, t([-0.05, 0.5, 0.6]))
    torch.testing.assert_close(ret, t([0.45, 0.7, 1.0]))


def test_gae_ignores_everything_after_the_response():
    adv, _ = L.gae(t([0, 1, 5]), t([0.5, 0.2, 9.0]), t([1, 1, 0]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, t([0.1, 0.8, 0.0]))


def test_gae_with_discount_is_the_discounted_return_when_lambda_is_one():
    rewards, values = t([1, 2, 3]), t([0.3, -0.2, 0.7])
    _, ret = L.gae(rewards, values, t([1, 1, 1]), gamma=0.9, lam=1.0)
    torch.testing.assert_close(ret, t([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0]))


def test_kl_estimators_by_hand():
    logps, ref = torch.log(t([0.5])), torch.log(t([0.25]))
    assert L.kl_estimate(logps, ref, "k1").item() == pytest.approx(math.log(2))
    assert L.kl_estimate(logps, ref, "k3").item() == pytest.approx(-0.5 + math.log(2))
    same = L.kl_estimate(logps, logps, "k3")
    assert same.item() == 0.0


def test_k1_and_k3_estimate_the_true_kl_on_samples():
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    true = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    for estimator in ("k1", "k3"):
        est = L.kl_estimate(p.log()[x], q.log()[x], estimator).mean().item()
        assert est == pytest.approx(true, abs=0.01)


def test_adaptive_kl_follows_ziegler_et_al():
    ctl = AdaptiveKL(0.1, target=6.0, horizon=10000)
    ctl.update(kl=9.0, n_samples=100)  # error 0.5 clipped to 0.2
    assert ctl.coef == pytest.approx(0.1 * (1 + 0.2 * 100 / 10000))
    ctl = AdaptiveKL(0.1, target=6.0, horizon=1000)
    ctl.update(kl=5.4, n_samples=100)  # error -0.1
    assert ctl.coef == pytest.approx(0.1 * (1 - 0.1 * 100 / 1000))
    fixed = AdaptiveKL(0.1)
    fixed.update(kl=100.0, n_samples=100)
    assert fixed.coef == 0.1


def test_rloo_and_group_baselines_by_hand():
    torch.testing.assert_close(L.rloo_advantages(t(1, 2, 3, 4), 2), t(-1, 1, -1, 1))
    torch.testing.assert_close(L.rloo_advantages(t(1, 2, 6), 3), t(-3, -1.5, 4.5))
    std = math.sqrt(14 / 3)
    torch.testing.assert_close(
        L.group_advantages(t(1, 2, 3, 6), 4), t(-2 / std, -1 / std, 0, 3 / std), atol=1e-4,
        rtol=1e-4)


def test_whitening_by_hand_and_mean_kept_for_rewards():
    x, mask = t([1, 2, 3, 4, 99]), t([1, 1, 1, 1, 0])
    std = math.sqrt(5 / 3)
    expected = t([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std, 0])
    torch.testing.assert_close(L.masked_whiten(x, mask), expected, atol=1e-5, rtol=1e-5)
    kept = L.masked_whiten(x, mask, shift_mean=False)
    assert L.masked_mean(kept, mask).item() == pytest.approx(2.5)


def test_policy_loss_clips_by_hand():
    mask = t([1])
    loss, m = L.ppo_policy_loss(torch.log(t([1.5])), torch.log(t([1.0])), t([2.0]), mask, 0.2)
    assert loss.item() == pytest.approx(-1.2 * 2.0)  # the ratio is held at 1 + clip
    assert m["clip_fraction"].item() == 1.0
    assert m["approx_kl"].item() == pytest.approx(0.5 * math.log(1.5) ** 2)
    loss, m = L.ppo_policy_loss(torch.log(t([0.5])), torch.log(t([1.0])), t([-1.0]), mask, 0.2)
    assert loss.item() == pytest.approx(0.8)  # pessimistic: the clipped ratio 0.8
    loss, m = L.ppo_policy_loss(torch.log(t([1.1])), torch.log(t([1.0])), t([3.0]), mask, 0.2)
    assert loss.item() == pytest.approx(-3.3) and m["clip_fraction"].item() == 0.0


def test_policy_loss_gradient_at_ratio_one_is_the_policy_gradient():
    logps = torch.log(t([0.2, 0.5])).requires_grad_()
    adv = t([1.0, -2.0])
    loss, _ = L.ppo_policy_loss(logps, logps.detach(), adv, t([1, 1]))
    loss.backward()
    torch.testing.assert_close(logps.grad, -adv / 2)


def test_value_loss_clips_by_hand():
    loss, m = L.ppo_value_loss(t([2.0]), t([1.0]), t([3.0]), t([1]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.2 - 3) ** 2)
    assert m["value_clip_fraction"].item() == 1.0
    loss, _ = L.ppo_value_loss(t([1.1]), t([1.0]), t([3.0]), t([1]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.9**2)


def test_entropy_of_uniform_and_peaked_rows():
    logits = torch.stack([torch.zeros(8), torch.tensor([50.0] + [0.0] * 7)])
    ent = entropy(torch.log_softmax(logits, dim=-1))
    assert ent[0].item() == pytest.approx(math.log(8)) and ent[1].item() < 1e-6
