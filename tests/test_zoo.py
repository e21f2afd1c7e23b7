"""The CIFAR zoo against the published models' state_dicts, forward passes and stages; the ImageNet models.

``tests/data/cifar_zoo_state_dicts.json`` lists, for each of the 23 CIFAR models that CRD and
mdistiller publish (100 classes), its parameter count and every ``state_dict`` key with its shape,
as their own code produces them: the published teacher files hold exactly these.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.errors import DistillError
from distill.models import available, create, run_stages, stage_output_shapes, stages
from tests._zoo_reference import large_resnet, reference_for

REFERENCE = json.loads((Path(__file__).parent / "data" / "cifar_zoo_state_dicts.json").read_text())
PUBLISHED = sorted(REFERENCE)
CIFAR_ZOO = [*PUBLISHED, "ResNet34"]
SMALL_MODELS = {
    "cnn_tiny": (1, 8, 8), "cnn_small": (1, 28, 28), "cnn_large": (1, 8, 8),
    "mlp_small": (1, 8, 8), "mlp_large": (1, 28, 28),
}  # fmt: skip
# ImageNet models are checked on 64x64 images: the stages and weights do not depend on the size.
IMAGENET = {name: (3, 64, 64) for name in available() if name.startswith("imagenet_")}
CIFAR = (3, 32, 32)


@pytest.fixture(autouse=True)
def _one_thread(_quiet_and_isolated):
    """One thread: batches of 2 gain nothing from a second one, and on 2 shared cores OpenMP's
    spinning threads made these forward passes 3 to 6 times slower (measured on ResNet50)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo():
    """Each CIFAR model built once for this module (100 classes, eval mode); freed afterwards."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            torch.manual_seed(0)
            built[name] = create(name, num_classes=100, input_shape=CIFAR).eval()
        return built[name]

    yield get
    built.clear()


def random_published_state_dict(name: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tensors with the published keys and shapes; BatchNorm statistics kept in a sane range."""
    state = {}
    for key, shape in REFERENCE[name]["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(240 * 782)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) > 1:  # conv and linear weights at He scale
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:  # BN weight near 0.5, biases and means near 0
            state[key] = 0.1 * torch.randn(shape, generator=generator) + (0.5 if key.endswith("weight") else 0.0)
    return state


@pytest.mark.parametrize("name", PUBLISHED)
def test_keys_shapes_and_parameter_count_are_the_published_ones(zoo, name):
    model = zoo(name)
    expected = REFERENCE[name]
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert set(shapes) == set(expected["state_dict"]), (
        f"missing {sorted(set(expected['state_dict']) - set(shapes))[:5]}, "
        f"extra {sorted(set(shapes) - set(expected['state_dict']))[:5]}"
    )
    assert shapes == expected["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == expected["params"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_state_dict_loads_strict_and_gives_the_reference_logits(zoo, name):
    """Random weights in the published layout load with strict=True; the logits on a [2, 3, 32, 32]
    batch equal an independent functional forward pass of the published architecture, and the
    model's stages run one after another give exactly the model's logits.
    (float32 with a relative tolerance: float64 grouped convolutions take a minute on 2 cores;
    a misplaced ReLU, stride or shortcut changes the logits by O(1).)"""
    generator = torch.Generator().manual_seed(len(name))
    state = random_published_state_dict(name, generator)
    model = zoo(name)
    model.load_state_dict(state, strict=True)
    images = torch.randn(2, *CIFAR, generator=generator)
    with torch.no_grad():
        logits = model(images)
        expected = reference_for(name)(state, images)
        staged = run_stages(stages(model), images)
    assert logits.shape == (2, 100)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert torch.equal(staged, logits), "the stages run one after another must be the model"


def _block_parameters(in_channels: int, channels: int, stride: int) -> int:
    """Two 3x3 convolutions, two BatchNorms (weight and bias), and a 1x1 projection with its BN if needed."""
    count = 9 * in_channels * channels + 9 * channels * channels + 4 * channels
    if stride != 1 or in_channels != channels:
        count += in_channels * channels + 2 * channels
    return count


def test_resnet34_is_resnet18_with_3_4_6_3_blocks(zoo):
    resnet18, resnet34 = zoo("ResNet18"), zoo("ResNet34")

    def pattern(key: str) -> str:
        return re.sub(r"^(layer\d)\.\d+\.", r"\1.N.", key)

    assert {pattern(key) for key in resnet34.state_dict()} == {pattern(key) for key in resnet18.state_dict()}
    assert [len(getattr(resnet34, f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    expected = 3 * 64 * 9 + 2 * 64 + 512 * 100 + 100
    in_channels = 64
    for channels, count, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)):
        for index in range(count):
            expected += _block_parameters(in_channels, channels, stride if index == 0 else 1)
            in_channels = channels
    assert sum(p.numel() for p in resnet34.parameters()) == expected == 21_328_292
    generator = torch.Generator().manual_seed(34)
    state = {key: torch.randn(value.shape, generator=generator) * 0.05 for key, value in resnet34.state_dict().items()}
    for key in [key for key in state if "running_var" in key]:
        state[key] = torch.rand(state[key].shape, generator=generator) + 0.5
    resnet34.load_state_dict(state, strict=True)
    images = torch.randn(2, *CIFAR, generator=generator)
    with torch.no_grad():
        logits = resnet34(images)
        torch.testing.assert_close(logits, large_resnet(state, images), rtol=1e-5, atol=1e-5)
        assert torch.equal(run_stages(stages(resnet34), images), logits)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "ShuffleV2"])
def test_cifar_models_take_other_image_sizes_and_channels(name):
    """Global pooling: the same architecture runs on Fashion-MNIST's 1x28x28 images."""
    model = create(name, num_classes=10, input_shape=(1, 28, 28)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# -- stages ---------------------------------------------------------------------------------------


def _stage_model(name: str, zoo) -> tuple[nn.Module, tuple[int, ...]]:
    if name in SMALL_MODELS:
        return create(name, num_classes=10, input_shape=SMALL_MODELS[name]).eval(), SMALL_MODELS[name]
    if name in IMAGENET:
        torch.manual_seed(0)
        return create(name, num_classes=10, input_shape=IMAGENET[name]).eval(), IMAGENET[name]
    return zoo(name), CIFAR


@pytest.mark.parametrize("name", [*CIFAR_ZOO, *SMALL_MODELS, *IMAGENET])
def test_stages_share_and_cover_the_parameters_and_keep_the_state_dict(zoo, name):
    model, _ = _stage_model(name, zoo)
    keys_before = list(model.state_dict())
    parts = stages(model)
    assert len(parts) >= 2 and all(isinstance(part, nn.Module) for part in parts)
    assert list(model.state_dict()) == keys_before, "stages() registered new modules on the model"
    model_parameters = {id(p) for p in model.parameters()}
    stage_parameters = [id(p) for part in parts for p in part.parameters()]
    assert set(stage_parameters) == model_parameters, "the stages must share, and cover, the model's parameters"
    assert len(stage_parameters) == len(model_parameters), "a parameter belongs to two stages"


@pytest.mark.parametrize("name", [*SMALL_MODELS, *IMAGENET])
def test_stages_compose_to_the_model(zoo, name):
    """(The CIFAR zoo checks this on published-layout weights in the reference-logits test.)"""
    model, input_shape = _stage_model(name, zoo)
    images = torch.randn(2, *input_shape)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, 10)
        assert torch.equal(run_stages(stages(model), images), logits)


def test_stage_output_shapes_follow_the_downsampling_and_leave_the_model_untouched(zoo):
    model = zoo("resnet56").train()
    running_mean = model.bn1.running_mean.clone()
    assert stage_output_shapes(model, CIFAR) == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (100,)]
    assert model.training and torch.equal(model.bn1.running_mean, running_mean)
    model.eval()
    assert stage_output_shapes(zoo("vgg13"), CIFAR) == [
        (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 4, 4), (512, 4, 4), (100,)
    ]  # fmt: skip
    assert stage_output_shapes(zoo("MobileNetV2"), CIFAR) == [
        (16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2), (100,)
    ]  # fmt: skip
    assert stage_output_shapes(zoo("ResNet18"), CIFAR)[1:-1] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    cnn_large = create("cnn_large", 10, (1, 8, 8))
    assert stage_output_shapes(cnn_large, (1, 8, 8)) == [(32, 4, 4), (64, 4, 4), (64, 4, 4), (10,)]
    assert stage_output_shapes(create("mlp_large", 10, (1, 8, 8)), (1, 8, 8)) == [(256,), (256,), (10,)]


def test_a_model_without_stages_is_one_clear_error():
    with pytest.raises(DistillError) as error:
        stages(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    message = str(error.value)
    assert "\n" not in message and "Sequential" in message and "stages()" in message


def test_every_registered_model_is_covered_here():
    """A new family must be added to these tests (keys, forward, stages)."""
    assert set(available()) == set(CIFAR_ZOO) | set(SMALL_MODELS) | set(IMAGENET)
    assert {"imagenet_resnet18", "imagenet_resnet34", "imagenet_resnet50", "imagenet_mobilenetv2"} <= set(IMAGENET)


# -- ImageNet models: offline, weights from a local file --------------------------------------------


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test (every model here builds offline)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# The loader is the same for every ImageNet model; MobileNetV2 (3.5M parameters) keeps the files small.
LOADED = "imagenet_mobilenetv2"


def test_imagenet_model_loads_a_local_weights_file(tmp_path):
    shape = IMAGENET[LOADED]
    generator = torch.Generator().manual_seed(1)
    state = {key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
             for key, value in create(LOADED, num_classes=10, input_shape=shape).state_dict().items()}  # fmt: skip
    torch.save(state, tmp_path / "plain.pth")  # torchvision's published format
    torch.save({"state_dict": state, "epoch": 90}, tmp_path / "wrapped.pth")
    for file in ("plain.pth", "wrapped.pth"):
        model = create(LOADED, num_classes=10, input_shape=shape, weights=str(tmp_path / file))
        assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


@pytest.mark.parametrize("damage", ["missing", "other_architecture", "other_classes", "pickled_code", "truncated"])
def test_bad_imagenet_weights_file_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "weights.pth"
    if damage == "other_architecture":
        torch.save(create("resnet8", 10, CIFAR).state_dict(), path)
    elif damage == "other_classes":
        torch.save(create(LOADED, 7, IMAGENET[LOADED]).state_dict(), path)
    elif damage == "pickled_code":
        torch.save({"features.0.0.weight": torch.zeros(1), "hook": test_imagenet_models_need_three_channels}, path)
    elif damage == "truncated":
        torch.save(create(LOADED, 10, IMAGENET[LOADED]).state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DistillError) as error:
        create(LOADED, num_classes=10, input_shape=IMAGENET[LOADED], weights=str(path))
    message = str(error.value)
    assert "\n" not in message and str(path) in message


def test_imagenet_models_need_three_channels():
    with pytest.raises(DistillError, match=r"3-channel.*\(1, 28, 28\)"):
        create("imagenet_resnet18", num_classes=10, input_shape=(1, 28, 28))
