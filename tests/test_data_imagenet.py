"""ImageNet's loading code on a small ImageFolder tree of JPEGs: transforms, split, sharding, errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from distill.data import ImageNetDataModule
from distill.errors import DistillError
from tests.fake_data import write_image_folder

CLASSES = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    write_image_folder(root / "train", CLASSES, per_class=6, size=(48, 36))
    write_image_folder(root / "val", CLASSES, per_class=2, size=(36, 48), seed=1)
    return root


def module(root, **kwargs) -> ImageNetDataModule:
    arguments = {"data_dir": str(root), "batch_size": 4, "val_size": 3, "num_classes": 3, "num_workers": 0}
    return ImageNetDataModule(**{**arguments, **kwargs})


def test_train_val_test_batches_with_the_recipes_transforms(tree):
    data = module(tree)
    assert data.num_classes == 3 and data.input_shape == [3, 224, 224] and data.has_random_augmentation
    data.setup("fit")
    assert [len(data.datasets[split]) for split in ("train", "val", "test")] == [15, 3, 6]
    assert sorted(data.datasets["val"].dataset.targets[row] for row in data.datasets["val"].rows) == [0, 1, 2]
    seen = []
    for images, labels, index in data.train_dataloader():
        assert images.shape[1:] == (3, 224, 224) and images.dtype == torch.float32
        seen += index.tolist()
    assert sorted(seen) == list(range(15))
    images, labels, index = next(iter(data.test_dataloader()))
    assert images.shape == (4, 3, 224, 224) and index.tolist() == [0, 1, 2, 3] and labels.tolist() == [0, 0, 1, 1]
    # Evaluation is deterministic (resize 256 + center crop 224); training crops are random.
    assert torch.equal(images, next(iter(data.test_dataloader()))[0])
    first, second = (data.datasets["train"][0][0] for _ in range(2))
    assert not torch.equal(first, second)


def test_each_rank_reads_its_own_shard(tree):
    """Sharding with explicit rank and world size: padded training shards, unpadded evaluation shards."""
    from distill.data.sharding import Placement, sharded_dataloader

    data = module(tree)
    data.setup("fit")
    train, test = data.datasets["train"], data.datasets["test"]
    shards = [
        [int(i) for _, _, index in sharded_dataloader(train, 4, True, Placement(rank, 2), seed=0, num_workers=0) for i in index]
        for rank in range(2)
    ]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == 8 and set(shards[0]) | set(shards[1]) == set(range(15))
    evaluation = [
        [int(i) for _, _, index in sharded_dataloader(test, 4, False, Placement(rank, 4), seed=0, num_workers=0) for i in index]
        for rank in range(4)
    ]  # fmt: skip
    assert evaluation == [[0, 4], [1, 5], [2], [3]]


@pytest.mark.parametrize(
    "break_tree, message",
    [
        (lambda root: shutil.rmtree(root), r"ImageNet not found: .* does not exist; expected <data_dir>/train/<class>"),
        (lambda root: shutil.rmtree(root / "val"), r"/val is not a folder; expected"),
        (lambda root: shutil.rmtree(root / "val" / CLASSES[2]), r"train has 3 class folders and .*/val 2, not the same \(e.g. n01484850\)"),
        (lambda root: [path.unlink() for path in (root / "train" / CLASSES[1]).iterdir()], r"/train: Found no valid file for the classes n01443537"),
        (lambda root: [shutil.rmtree(path) for path in (root / "train").iterdir()], r"/train: Couldn't find any class folder"),
    ],
    ids=["missing", "no-val", "classes-differ", "empty-class", "no-classes"],
)
def test_a_missing_or_malformed_tree_is_one_line(tree, tmp_path, break_tree, message):
    root = tmp_path / "copy"
    shutil.copytree(tree, root)
    break_tree(root)
    with pytest.raises(DistillError, match=message) as error:
        module(root).setup("fit")
    assert "\n" not in str(error.value)


def test_num_classes_must_match_the_tree(tree):
    with pytest.raises(DistillError, match=r"has 3 class folders but num_classes=1000; set --data.num_classes=3"):
        module(tree, num_classes=1000).setup("fit")
