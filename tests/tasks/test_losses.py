"""Losses: ignore_index ignores exactly those targets, class weights, refusals, combinations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofm.tasks.losses import LOSS_NAMES, WeightedSumLoss, build_loss

IGNORE = -1


def _seg_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 8, 8, generator=gen)
    mask = torch.randint(0, 3, (2, 8, 8), generator=gen)
    mask[0, :3] = IGNORE
    mask[1, :, :2] = IGNORE
    return logits, mask


@pytest.mark.parametrize("name", LOSS_NAMES["segmentation"])
def test_segmentation_losses_ignore_exactly_the_ignored_pixels(name):
    loss = build_loss("segmentation", name, ignore_index=IGNORE)
    logits, mask = _seg_batch()
    ignored = mask == IGNORE
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(logits)] = torch.randn(int(ignored.sum()) * 3) * 10
    base = loss(logits, mask)
    assert torch.isfinite(base)
    torch.testing.assert_close(loss(changed, mask), base)
    # a change at a valid pixel does change it
    valid_changed = logits.clone()
    b, h, w = torch.nonzero(~ignored)[0]
    valid_changed[b, :, h, w] = torch.tensor([10.0, -10.0, 0.0]) * (1 if mask[b, h, w] != 0 else -1)
    assert not torch.allclose(loss(valid_changed, mask), base)


def test_ce_class_weights_match_hand_computation():
    logits, mask = _seg_batch(1)
    weights = [0.2, 1.0, 3.0]
    loss = build_loss("segmentation", "ce", ignore_index=IGNORE, class_weights=weights)(logits, mask)
    x, t = logits.numpy(), mask.numpy()
    log_prob = x - x.max(1, keepdims=True)
    log_prob = log_prob - np.log(np.exp(log_prob).sum(1, keepdims=True))
    b, h, w = np.nonzero(t != IGNORE)
    cls = t[b, h, w]
    w_pix = np.array(weights)[cls]
    expected = (w_pix * -log_prob[b, cls, h, w]).sum() / w_pix.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unweighted = build_loss("segmentation", "ce", ignore_index=IGNORE)(logits, mask)
    assert float(unweighted) != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("name", ["dice", "focal", "jaccard"])
def test_class_weights_reach_smp_losses(name):
    logits, mask = _seg_batch(2)
    plain = build_loss("segmentation", name, ignore_index=IGNORE)(logits, mask)
    uniform = build_loss("segmentation", name, ignore_index=IGNORE, class_weights=[2.0, 2.0, 2.0])(logits, mask)
    skewed = build_loss("segmentation", name, ignore_index=IGNORE, class_weights=[1.0, 0.0, 0.0])(logits, mask)
    torch.testing.assert_close(uniform, plain)  # weights are normalised
    assert not torch.allclose(skewed, plain)


def test_losses_that_cannot_honour_options_refuse():
    with pytest.raises(ValueError, match="lovasz.*class_weights"):
        build_loss("segmentation", "lovasz", class_weights=[1.0, 2.0])
    for name in LOSS_NAMES["regression"]:
        with pytest.raises(ValueError, match=f"{name}.*class_weights"):
            build_loss("regression", name, class_weights=[1.0])
    with pytest.raises(KeyError, match="'dcie' is not a segmentation loss.*did you mean 'dice'"):
        build_loss("segmentation", "dcie")
    with pytest.raises(KeyError, match="not a multilabel loss"):
        build_loss("multilabel", "ce")
    with pytest.raises(ValueError, match="class_weights has 2 values but there are 3 classes"):
        build_loss("segmentation", "ce", class_weights=[1, 2], num_classes=3)
    with pytest.raises(TypeError, match=r"loss\['ce'\] must be a number"):
        build_loss("segmentation", {"ce": "high"})


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    mask = torch.full((1, 4, 4), IGNORE)
    for name in LOSS_NAMES["segmentation"]:
        value = build_loss("segmentation", name, ignore_index=IGNORE)(logits, mask)
        assert value.shape == () and float(value.detach()) == 0.0, name
        value.backward()
        assert torch.isfinite(logits.grad).all(), name


def test_combination_is_the_weighted_sum():
    logits, mask = _seg_batch(3)
    combined = build_loss("segmentation", {"ce": 1.0, "dice": 0.5}, ignore_index=IGNORE)
    assert isinstance(combined, WeightedSumLoss)
    ce = build_loss("segmentation", "ce", ignore_index=IGNORE)(logits, mask)
    dice = build_loss("segmentation", "dice", ignore_index=IGNORE)(logits, mask)
    torch.testing.assert_close(combined(logits, mask), ce + 0.5 * dice)
    listed = build_loss("segmentation", ["ce", "dice"], ignore_index=IGNORE)
    torch.testing.assert_close(listed(logits, mask), ce + dice)


def test_module_passes_through():
    module = torch.nn.L1Loss()
    assert build_loss("regression", module) is module


@pytest.mark.parametrize("name", LOSS_NAMES["regression"])
def test_regression_losses_skip_nan_and_ignore_index(name):
    pred = torch.tensor([[1.0, 2.0, 3.0, 50.0], [0.5, -1.0, 7.0, 4.0]])
    target = torch.tensor([[1.5, float("nan"), 2.0, -9999.0], [0.0, 1.0, 7.0, 3.0]])
    loss = build_loss("regression", name, ignore_index=-9999.0)(pred, target)
    valid = torch.isfinite(target) & (target != -9999.0)
    diff = (pred[valid] - target[valid]).numpy()
    expected = {
        "mse": (diff**2).mean(),
        "rmse": math.sqrt((diff**2).mean()),
        "mae": np.abs(diff).mean(),
        "huber": np.where(np.abs(diff) < 1, 0.5 * diff**2, np.abs(diff) - 0.5).mean(),
    }[name]
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    everything_invalid = build_loss("regression", name, ignore_index=-9999.0)(pred, torch.full_like(pred, -9999.0))
    assert float(everything_invalid) == 0.0


def test_classification_losses():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 2, IGNORE])
    ce = build_loss("classification", "ce", ignore_index=IGNORE)(logits, labels)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits[:2], labels[:2]))
    bce = build_loss("classification", "bce", ignore_index=IGNORE, class_weights=[1.0, 2.0, 1.0])(logits, labels)
    one_hot = torch.nn.functional.one_hot(labels[:2], 3).float()
    per_entry = torch.nn.functional.binary_cross_entropy_with_logits(logits[:2], one_hot, reduction="none")
    weights = torch.tensor([1.0, 2.0, 1.0]).expand(2, 3)
    torch.testing.assert_close(bce, (per_entry * weights).sum() / weights.sum())
    focal = build_loss("classification", "focal", ignore_index=IGNORE)
    changed = logits.clone()
    changed[2] = torch.tensor([9.0, -9.0, 0.0])
    torch.testing.assert_close(focal(changed, labels), focal(logits, labels))


@pytest.mark.parametrize("name", ["bce", "focal"])
def test_multilabel_losses_skip_unknown_entries(name):
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, 0, IGNORE, 1], [0, 0, 1, 1], [IGNORE, 1, 0, 0]])
    loss = build_loss("multilabel", name, ignore_index=IGNORE)
    changed = logits.clone()
    changed[labels == IGNORE] = 42.0
    torch.testing.assert_close(loss(changed, labels), loss(logits, labels))
    weighted = build_loss("multilabel", name, ignore_index=IGNORE, class_weights=[1.0, 0.0, 0.0, 0.0])
    valid = labels[:, 0] != IGNORE
    only_first = build_loss("multilabel", name)(logits[valid][:, :1], labels[valid][:, :1])
    torch.testing.assert_close(weighted(logits, labels), only_first)
