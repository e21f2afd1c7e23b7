"""The model registry and the digits data module."""

from __future__ import annotations

import pytest
import torch

from distill.data import DigitsDataModule
from distill.errors import DistillError
from distill.models import available, create


# The digits-sized families; the CIFAR and ImageNet zoo is tested in test_zoo.py.
SMALL_MODELS = ["cnn_tiny", "cnn_small", "cnn_large", "mlp_small", "mlp_large"]


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28)])
def test_every_small_model_maps_images_to_logits(name, input_shape):
    model = create(name, num_classes=7, input_shape=input_shape)
    logits = model(torch.randn(3, *input_shape))
    assert logits.shape == (3, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registry_lists_both_families_and_rejects_unknown_names():
    assert {"cnn_tiny", "cnn_small", "cnn_large", "mlp_small", "mlp_large"} <= set(available())
    with pytest.raises(DistillError, match="unknown model 'resnet9000'.*cnn_large"):
        create("resnet9000", num_classes=10)


def test_digits_split_is_stratified_deterministic_and_disjoint(digits):
    sizes = {split: len(dataset) for split, dataset in digits.datasets.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["val"] == pytest.approx(0.1 * (1797 - 360), abs=1)
    rows = {split: {tuple(image.flatten().tolist()) for image in dataset.images} for split, dataset in digits.datasets.items()}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    for split, dataset in digits.datasets.items():
        counts = torch.bincount(dataset.labels, minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02, f"{split} split is not stratified"
    again = DigitsDataModule()
    again.setup("fit")
    assert torch.equal(again.datasets["train"].images, digits.datasets["train"].images)


def test_batches_carry_the_sample_index(digits):
    seen = []
    for images, labels, index in digits.train_dataloader():
        assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        dataset = digits.datasets["train"]
        assert torch.equal(dataset.images[index], images) and torch.equal(dataset.labels[index], labels)
        seen.append(index)
    seen = torch.cat(seen)
    assert torch.equal(seen.sort().values, torch.arange(len(digits.datasets["train"])))


def test_data_module_declares_what_the_models_need():
    data = DigitsDataModule()
    assert data.num_classes == 10 and tuple(data.input_shape) == (1, 8, 8)
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=1.5)
