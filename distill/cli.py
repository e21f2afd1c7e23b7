"""The ``distill`` command: LightningCLI over ``DistillationModule`` and any LightningDataModule.

    distill fit --config configs/default.yaml [--trainer.max_epochs=3 ...]
    distill fit --config configs/default.yaml --print_config     # every hyperparameter
    distill validate|test --config ... --ckpt_path runs/.../checkpoints/last.ckpt

``num_classes`` and ``input_shape`` are linked from the data module into the models; each run gets
its own folder ``runs/<name>/<timestamp>-<random>`` holding the resolved ``config.yaml``, the
TensorBoard events and the checkpoints. After ``fit`` the last-epoch student (and the teacher) are
tested and a short summary is printed.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
import warnings
from pathlib import Path

from jsonargparse import ArgumentError, lazy_instance
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

# Imported so that short class names resolve in configs and on the command line.
import callbacks
import distill.data  # noqa: F401
import distill.divergences  # noqa: F401
import distill.methods  # noqa: F401
import distill.policies  # noqa: F401
from distill.checkpoint_io import check_hyperparameters, check_resume_checkpoint, read_checkpoint
from distill.cli_errors import argument_error_line, check_config_files, check_run_values, instantiation_error_line
from distill.errors import DistillError
from distill.module import DistillationModule
from distill.pending_scalars import WRITER_QUEUE
from distill.policies import GridTemperature, SigmaAnchoredTemperature
from distill.reliable_training import LIGHTNING_CHECKPOINT_NAMES, add_reliability_defaults
from distill.run_folder import SaveConfigKeepingPrevious, place_run
from distill.run_metrics import TEST_KEYS, VALIDATION_KEYS, scalar_metrics, write_run_metrics

RUN_ID_VARIABLE = "DISTILL_RUN_ID"
# Top-level arguments holding observer callbacks, on by default; `--<key>=null` switches one off.
OBSERVER_CALLBACKS = {
    "per_sample_statistics": callbacks.PerSampleStatistics,
    "temperature_monitor": callbacks.TemperatureMonitor,
}


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx``: sortable and unique even for runs started in the same second.

    Each CLI in the launching process gets a new id; it is also put in the environment so that the
    DDP ranks Lightning starts as child processes (``LOCAL_RANK`` > 0) reuse their parent's id.
    Under a multi-task ``srun`` every rank is started by SLURM, so the id comes from the job, step
    and requeue count, which all ranks share.
    """
    inherited = os.environ.get(RUN_ID_VARIABLE)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return inherited
    slurm = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if all(slurm) and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        run_id = f"slurm{slurm[0]}.{slurm[1]}-r{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    else:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    os.environ[RUN_ID_VARIABLE] = run_id
    return run_id


# Config layers by folder: a run's default name is "<data>/<pair>/<method>" from the layers it was given.
NAMED_LAYERS = ("data", "pairs", "methods")


def run_name(config_files: list[str]) -> str:
    """The default run name from the config layers: the stems of the ``configs/data``, ``configs/pairs``
    and ``configs/methods`` layers joined by ``/`` (e.g. ``digits/digits_cnn-mlp_small/kd``); without
    such layers, the last config file's stem; with no config at all, ``default``."""
    paths = [Path(file) for file in config_files]
    parts = [path.stem for folder in NAMED_LAYERS for path in paths if path.parent.name == folder]
    if parts:
        return "/".join(parts)
    return paths[-1].stem if paths else "default"


class DistillCLI(LightningCLI):
    """LightningCLI with the data -> model links, project defaults and a post-fit test and summary."""

    def parse_arguments(self, parser, args) -> None:
        """Parse, turning a config file that does not parse and a value that does not validate into one
        ``DistillError`` line (the parser runs with ``exit_on_error=False``: no usage text)."""
        check_config_files(sys.argv[1:] if args is None else args if isinstance(args, list) else [])
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            raise DistillError(argument_error_line(str(error))) from None
        subcommand = self.config.get("subcommand")
        self.place_run(self.config[subcommand] if subcommand else self.config, subcommand)

    def place_run(self, config, subcommand: str | None) -> None:
        """Right after parsing, before Lightning reads a ``ckpt_path``'s hyperparameters into the config: check the
        trainer values, name the run, put its output under ``default_root_dir``, resolve ``--ckpt_path=last``, make a
        resumed run continue in its own folder (``distill.run_folder``), and check the checkpoint: readable plain
        weights, and for ``fit`` written with this config's model (Lightning would silently replace the config's
        model settings by the checkpoint's)."""
        check_run_values(config)
        logger = config.get("trainer.logger")
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "name" in init_args and not init_args.get("name"):
            init_args["name"] = run_name([str(path) for path in config.get("config") or []])
        notice = place_run(config, fit=subcommand == "fit")
        if notice and rank_zero_only.rank == 0:
            print(notice, file=sys.stderr, flush=True)
        checkpoint = config.get("ckpt_path")
        if checkpoint and checkpoint not in LIGHTNING_CHECKPOINT_NAMES:
            stored = read_checkpoint(checkpoint)
            if subcommand == "fit":  # validate/test evaluate the checkpoint's own model, as Lightning builds it
                check_hyperparameters(stored, config.get("model"), checkpoint)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a constructor's refusal (``DistillError``, ``ValueError``, Lightning's
        ``MisconfigurationException``), however jsonargparse wrapped it, becomes one ``DistillError`` line."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            raise DistillError(instantiation_error_line(error)) from None

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="After fit, test the last-epoch student and teacher."
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int,
            default=500,
            help="Also a checkpoint (and last.ckpt) every N training steps, to resume mid-epoch; 0: per epoch only.",
        )
        for key, callback in OBSERVER_CALLBACKS.items():
            parser.add_argument(
                f"--{key}",
                type=callback | None,
                default=lazy_instance(callback),
                help=f"{callback.__name__} callback (on by default; null switches it off).",
            )
        parser.set_defaults(
            {
                "model.temperature_policy": lazy_instance(SigmaAnchoredTemperature),
                "model.divergence": lazy_instance(distill.divergences.KL),
                "model.optimizer": {
                    "class_path": "torch.optim.SGD",
                    "init_args": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                },
                "model.lr_scheduler": {
                    "class_path": "torch.optim.lr_scheduler.MultiStepLR",
                    "init_args": {"milestones": [150, 180, 210], "gamma": 0.1},
                },
                "trainer.logger": lazy_instance(
                    TensorBoardLogger, save_dir="runs", name=None, default_hp_metric=False, max_queue=WRITER_QUEUE
                ),
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        policy = config.get("model.temperature_policy")
        class_path = getattr(policy, "class_path", "") or ""
        if class_path.split(".")[-1] == GridTemperature.__name__:
            sources = config.get("config") or []
            source = str(sources[-1]) if sources else "CONFIG.yaml"
            raise DistillError(GridTemperature.cannot_train_message(source))
        init_args = getattr(config.get("trainer.logger"), "init_args", None)
        if init_args is not None and "version" in init_args and init_args.get("version") is None:
            init_args["version"] = new_run_id()

    def instantiate_trainer(self, **kwargs):
        """The trainer, with the observer callbacks that are not switched off appended to its callbacks, and the
        reliability defaults (``distill.reliable_training``). A ``ckpt_path``'s weights are checked against the model
        before the trainer is built."""
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        checkpoint = config.get("ckpt_path")
        if checkpoint and checkpoint not in LIGHTNING_CHECKPOINT_NAMES:
            self.resume_step = check_resume_checkpoint(checkpoint, self.model)
        self.read_data_first()
        observers = [config.get(key) for key in OBSERVER_CALLBACKS]
        observers = [observer for observer in observers if observer is not None]
        existing = kwargs.get("callbacks", config.get("trainer.callbacks"))
        existing = [] if existing is None else list(existing) if isinstance(existing, list) else [existing]
        kwargs["callbacks"] = existing + observers
        add_reliability_defaults(kwargs, config)
        return super().instantiate_trainer(**kwargs)

    def read_data_first(self) -> None:
        """Let the data module read its files before the trainer exists: a missing or broken data set then stops with
        its one line alone, before Lightning's banner and before a run folder is opened. (Lightning calls ``setup``
        again in each process; the modules keep what they read. Not where the module is asked to download: its
        ``prepare_data``, which Lightning runs once per node, comes first then.)"""
        data = self.datamodule
        if self.subcommand in ("fit", "validate", "test") and data is not None and not getattr(data, "download", False):
            data.setup("fit" if self.subcommand == "fit" else self.subcommand)

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()
        # Resumed into its own folder at step S: TensorBoard drops the previous run's events from step S on (those
        # after the checkpoint, trained again now), so the curves continue without a doubled stretch.
        logger = self.trainer.logger
        if getattr(self, "resume_step", None) and isinstance(logger, TensorBoardLogger) and logger._experiment is None:
            if logger._kwargs.get("purge_step") is None:  # SummaryWriter's purge_step, before the writer exists
                logger._kwargs["purge_step"] = self.resume_step

    def after_fit(self) -> None:
        trainer = self.trainer
        if trainer.interrupted or trainer.received_sigterm:
            return  # no test and no metrics.json: the run did not finish (distill-sweep resumes it)
        fit_seconds = time.perf_counter() - self._fit_started
        # The test replaces callback_metrics, so the last validation's values are taken first.
        metrics = scalar_metrics(trainer.callback_metrics, VALIDATION_KEYS)
        config = self.config[self.subcommand]
        if config.get("test_after_fit", True):
            # The fit saved config.yaml, but under a fork/spawn DDP launcher it did so in worker processes,
            # so this process's callback does not know and the test would refuse the existing file.
            for callback in trainer.callbacks:
                if isinstance(callback, SaveConfigCallback):
                    callback.already_saved = True
            trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            metrics |= scalar_metrics(trainer.callback_metrics, TEST_KEYS)
            if trainer.is_global_zero:
                print_summary(trainer)
        run_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if trainer.is_global_zero and run_dir:
            layers = [getattr(layer, "relative", layer) for layer in config.get("config") or []]
            seed = config.get("seed_everything")
            seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
            # Under a fork/spawn launcher the fit ran in worker processes, which send back only the
            # metrics: this process does not know the epoch and step counts.
            in_workers = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
            epochs, steps = (None, None) if in_workers else (trainer.current_epoch, trainer.global_step)
            write_run_metrics(run_dir, metrics, epochs, steps, seed, fit_seconds, layers)


def print_summary(trainer) -> None:
    """Teacher and student test accuracy, the run's folder and how to open it in TensorBoard."""
    metrics = trainer.callback_metrics
    lines = ["", "=== distill: run summary ==="]
    if "test/teacher_acc1" in metrics:
        lines.append(f"teacher test top-1: {100 * float(metrics['test/teacher_acc1']):6.2f}%")
    if "test/acc1" in metrics:
        lines.append(f"student test top-1: {100 * float(metrics['test/acc1']):6.2f}%")
    log_dir = trainer.log_dir or trainer.default_root_dir
    lines.append(f"run folder:         {log_dir}")
    lines.append(f"open it with:       tensorboard --logdir {Path(log_dir).parent}")
    print("\n".join(lines), flush=True)


def cli_main(args: list[str] | dict | None = None, run: bool = True) -> DistillCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line, for tests and notebooks."""
    return DistillCLI(
        DistillationModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigKeepingPrevious,
        save_config_kwargs={"overwrite": False},
        parser_kwargs={"parser_mode": "yaml", "exit_on_error": False},
        args=args,
        run=run,
    )


def main() -> None:
    """Entry point of the ``distill`` command; user errors print one line and exit with status 2."""
    warnings.filterwarnings("ignore", message=r".*Found \d+ module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # the seed is in config.yaml
    try:
        cli_main()
    except (DistillError, MisconfigurationException) as error:
        print(f"distill: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
