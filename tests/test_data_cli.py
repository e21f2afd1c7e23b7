"""Short command-line runs on every fake data set (cross-entropy, small student), and one 2-process CPU DDP
run on fake CIFAR-100 that checks each rank's shards."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from distill.cli import cli_main
from tests.conftest import DEFAULT_CONFIG, REPO, SHORT_RUN, config_args
from tests.fake_data import random_cifar100, random_fashion_mnist, write_image_folder

DATA_CONFIGS = REPO / "configs" / "data"


def run(tmp_path: Path, data_config: str, *args: str):
    """``distill fit`` on the default layers with ``configs/data/<data_config>`` last, a short run, CE only."""
    argv = [
        "fit", *config_args(DEFAULT_CONFIG), f"--config={DATA_CONFIGS / data_config}", *SHORT_RUN,
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--model.teacher=null", "--model.student=mlp_small", *args,
    ]  # fmt: skip
    return cli_main(argv)


def finished_with_a_test_score(cli) -> None:
    assert cli.trainer.state.finished and cli.trainer.global_step == 2 * 4
    assert 0.0 <= float(cli.trainer.callback_metrics["test/acc1"]) <= 1.0
    assert list((Path(cli.trainer.log_dir) / "checkpoints").glob("last.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["tensor", "torchvision"])
def test_cifar100_run(tmp_path, augmentation):
    random_cifar100(tmp_path / "data", train=1000, test=200)
    cli = run(tmp_path, "cifar100.yaml", f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=100",
              f"--data.augmentation={augmentation}", "--data.num_workers=0", "--data.cutout=true")  # fmt: skip
    finished_with_a_test_score(cli)
    assert cli.model.hparams.input_shape == [3, 32, 32] and cli.model.hparams.num_classes == 100


@pytest.mark.slow
def test_cifar100_resumed_run_continues_exactly(tmp_path):
    """2 epochs + resume for a 3rd equals 3 epochs straight, bit for bit: same order, same augmentations."""
    random_cifar100(tmp_path / "data", train=1000, test=200)
    common = (f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=100", "--data.cutout=true", "--test_after_fit=false")
    straight = run(tmp_path / "straight", "cifar100.yaml", *common, "--trainer.max_epochs=3")
    first = run(tmp_path / "resumed", "cifar100.yaml", *common, "--trainer.max_epochs=2")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = run(tmp_path / "resumed", "cifar100.yaml", *common, "--trainer.max_epochs=3", f"--ckpt_path={last}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    for name, value in straight.model.student.state_dict().items():
        assert torch.equal(resumed.model.student.state_dict()[name], value), name


@pytest.mark.slow
def test_fashion_mnist_run(tmp_path):
    random_fashion_mnist(tmp_path / "data", train=600, test=100)
    cli = run(tmp_path, "fashion_mnist.yaml", f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=100")
    finished_with_a_test_score(cli)
    assert cli.model.hparams.input_shape == [1, 28, 28]


@pytest.mark.slow
def test_imagenet_run(tmp_path):
    classes = ["n01", "n02", "n03"]
    write_image_folder(tmp_path / "data" / "train", classes, per_class=12, size=(40, 30))
    write_image_folder(tmp_path / "data" / "val", classes, per_class=3, size=(30, 40), seed=1)
    cli = run(tmp_path, "imagenet.yaml", f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=6", "--data.num_classes=3",
              "--data.batch_size=4", "--data.image_size=32", "--data.resize_size=36", "--data.num_workers=0")  # fmt: skip
    finished_with_a_test_score(cli)
    assert cli.model.hparams.input_shape == [3, 32, 32] and cli.model.hparams.num_classes == 3


class RecordShards(L.Callback):
    """Each rank writes the sample indices it trained on (per epoch) and validated on to ``folder/rank<r>.pt``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.seen: dict[str, list[int]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.setdefault(f"train{trainer.current_epoch}", []).extend(batch[2].tolist())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.seen.setdefault(f"val{trainer.current_epoch}", []).extend(batch[2].tolist())

    def on_fit_end(self, trainer, pl_module):
        torch.save(self.seen, self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cifar100_under_two_process_ddp(tmp_path):
    """Training shards padded and disjoint (DistributedSampler order), validation shards unpadded and uneven
    (101 images: 51 + 50, i.e. 2 batches on rank 0 and 1 on rank 1), and the run does not hang on them."""
    random_cifar100(tmp_path / "data", train=1000, test=200)
    cli = run(
        tmp_path, "cifar100.yaml", f"--data.data_dir={tmp_path / 'data'}", "--data.val_size=101", "--data.batch_size=50",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork",
        "--trainer.use_distributed_sampler=false", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1.0",
        "--trainer.callbacks+=tests.test_data_cli.RecordShards", f"--trainer.callbacks.folder={tmp_path}",
        "--test_after_fit=false",
    )  # fmt: skip
    assert cli.trainer.state.finished
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for epoch in (0, 1):
        train = [shard[f"train{epoch}"] for shard in ranks]
        assert len(train[0]) == len(train[1]) == 150 and not set(train[0]) & set(train[1])
        sampler = torch.utils.data.DistributedSampler(range(899), num_replicas=2, rank=1, shuffle=True, seed=0)
        sampler.set_epoch(epoch)
        assert train[1] == list(sampler)[:150]  # the run's seed (0), epoch by epoch
        val = [shard[f"val{epoch}"] for shard in ranks]
        assert (len(val[0]), len(val[1])) == (51, 50) and sorted(val[0] + val[1]) == list(range(101))
