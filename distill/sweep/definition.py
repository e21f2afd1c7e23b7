"""What a sweep is: config layers, crossed with every ``--set`` list, a ``GridTemperature``'s values and the seeds.

A *configuration* is one combination of the ``--set`` values (and, where the merged layers hold a
``GridTemperature``, one of its temperatures); a *point* is a configuration with one seed, i.e. one
ordinary ``distill fit`` run. Points are numbered from 1 seed by seed: every configuration's first
seed comes before any second seed, so a sweep cut short still has a whole first row of seeds.

``--set KEY=V1,V2,...`` semantics:

- ``KEY`` is a dotted key of the ``distill`` command line, and point ``(V)`` runs
  ``distill fit ... --KEY=V``: each value is handed to ``distill fit`` exactly as written, so it is
  parsed as on that command line (a YAML scalar: ``3``, ``0.5``, ``1e-3``, ``true``, a class name, or a
  flow list such as ``[20,25]``). The value list itself is split as a YAML flow sequence, so commas
  inside brackets or quotes do not split.
- ``KEY`` ``config`` sweeps a config *layer*: each value is a YAML file added after the ``--config``
  layers, e.g. ``--set config=methods/sigma_anchored.yaml,methods/grid.yaml``.
- A ``GridTemperature`` in the merged layers (the last layer that sets ``model.temperature_policy``
  wins; a later layer that sets only its ``init_args`` updates them) expands into one
  ``FixedTemperature`` point per value, with the grid's ``ce_weight``, ``kd_weight`` and
  ``standardize``.
- The sweep sets ``seed_everything`` (``--seeds``), the run folder and ``ckpt_path`` itself: these
  keys are refused in ``--set`` and in the extra arguments.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from distill.errors import DistillError
from distill.policies import GridTemperature

CONFIG_AXIS = "config"
# A config-axis value of several layers: "configs/methods/dkd.yaml+configs/fashion_mnist/dkd.yaml".
JOIN = "+"


def layers_label(value: str) -> str:
    """The label of a config-axis value: its layers' file stems joined by ``+``, leaving out a layer named
    after the first one or its family (a data set's adjustment of that method: ``dkd+dkd`` is ``dkd``,
    ``ctkd_global+ctkd`` is ``ctkd_global``, ``kd+blockkd`` stays)."""
    stems = [Path(part).stem for part in value.split(JOIN)]
    first = stems[0]
    return JOIN.join([first, *(stem for stem in stems[1:] if not first.startswith(stem))])
_PLACED = "distill-sweep puts every run in its own folder of the sweep"
RESERVED_KEYS = {
    "seed_everything": "seeds are swept with --seeds N or --seeds 0,3,7",
    "ckpt_path": "distill-sweep resumes an interrupted point from its own last checkpoint",
    "trainer.default_root_dir": _PLACED,
    "trainer.logger": _PLACED,
    "trainer.logger.init_args.save_dir": _PLACED,
    "trainer.logger.init_args.name": _PLACED,
    "trainer.logger.init_args.version": _PLACED,
}
POLICY_KEYS = ("model.temperature_policy", "model.temperature_policy.class_path")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


@dataclass(frozen=True)
class Axis:
    """One ``--set KEY=V1,V2,...``: the key, its short name (for labels and columns) and the raw values."""

    key: str
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Configuration:
    """One combination of the swept values: what a point runs apart from its seed.

    Attributes:
        label: its folder name and row name in the report, e.g. ``T=2.0,kd_weight=3``.
        settings: ``{axis name: value as given}``, plus ``"T"`` for a grid point.
        group: for a grid point, the label without its ``T=`` part (``""`` when only T varies),
            which names the grid in the report; ``None`` otherwise.
        layers: the ``--config`` files (absolute), in order.
        arguments: ``--KEY=VALUE`` for the swept command-line keys.
        policy: a grid point's ``FixedTemperature`` init_args; ``None`` otherwise.
    """

    label: str
    settings: dict[str, str]
    group: str | None
    layers: tuple[str, ...]
    arguments: tuple[str, ...]
    policy: dict | None = None


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a configuration and a seed; ``index`` counts from 1 (SLURM array task id)."""

    index: int
    configuration: Configuration
    seed: int

    @property
    def label(self) -> str:
        return self.configuration.label

    @property
    def name(self) -> str:
        """``<label>/seed<k>``: how messages name the point."""
        return f"{self.label}/seed{self.seed}"


@dataclass
class Sweep:
    """A sweep's definition; ``points()`` expands it. Build it with ``from_arguments`` or ``from_record``."""

    configs: list[str]
    axes: list[Axis]
    seeds: list[int]
    extra: list[str]
    cwd: str
    _layer_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_arguments(
        cls, configs: Sequence[str | os.PathLike], sets: Sequence[str], seeds: str | None, extra: Sequence[str]
    ) -> Sweep:
        """The sweep of ``--config`` layers, ``--set`` texts, ``--seeds`` text and extra arguments (checked)."""
        if not configs:
            raise DistillError("--config: give at least one config file, e.g. --config configs/policies/grid.yaml")
        check_extra(extra)
        layers = [str(Path(config).resolve()) for config in configs]
        keys_and_values = [parse_set(text) for text in sets]
        keys = [key for key, _ in keys_and_values]
        for key in {key for key in keys if keys.count(key) > 1}:
            raise DistillError(f"--set {key}=... is given twice: list all its values in one --set {key}=V1,V2")
        names = short_names(keys)
        axes = []
        for key, values in keys_and_values:
            if key == CONFIG_AXIS:  # config layers: resolved like the --config layers; "a.yaml+b.yaml" is two
                values = [JOIN.join(str(Path(part).resolve()) for part in value.split(JOIN)) for value in values]
            axes.append(Axis(key, names[key], tuple(values)))
        sweep = cls(layers, axes, [], list(extra), os.getcwd())
        sweep.seeds = parse_seeds(seeds) if seeds is not None else [sweep._config_seed()]
        sweep.points()  # every file is read and every grid checked now, before anything is written
        return sweep

    @classmethod
    def from_record(cls, record: dict) -> Sweep:
        """The sweep a ``sweep.yaml`` record describes; its config files must be unchanged since."""
        axes = [Axis(axis["key"], axis["name"], tuple(axis["values"])) for axis in record["set"]]
        sweep = cls(list(record["configs"]), axes, list(record["seeds"]), list(record["extra"]), record["cwd"])
        for path, digest in record["config_sha256"].items():
            if sha256(path) != digest:
                raise DistillError(
                    f"config {path} changed since this sweep started (its finished runs used the old one): "
                    "restore it, or start a new sweep with another --name"
                )
        return sweep

    def record(self) -> dict:
        """The definition as plain data for ``sweep.yaml`` (with each config file's sha256)."""
        files = [*self.configs, *(part for axis in self.axes if axis.key == CONFIG_AXIS for value in axis.values
                                   for part in value.split(JOIN))]  # fmt: skip
        return {
            "configs": list(self.configs),
            "set": [{"key": axis.key, "name": axis.name, "values": list(axis.values)} for axis in self.axes],
            "seeds": list(self.seeds),
            "extra": list(self.extra),
            "cwd": self.cwd,
            "config_sha256": {path: sha256(path) for path in files},
        }

    def default_name(self) -> str:
        """The base layers' run name (the logger's ``name``), else the last layer's file stem."""
        return config_name([self._layer(path) for path in self.configs], self.configs)

    def configurations(self) -> list[Configuration]:
        """Every combination of the ``--set`` values, grids expanded, in ``--set`` order (last varies fastest)."""
        configurations = []
        for combination in itertools.product(*(axis.values for axis in self.axes)):
            chosen = list(zip(self.axes, combination))
            layers = [*self.configs, *(part for axis, value in chosen if axis.key == CONFIG_AXIS
                                       for part in value.split(JOIN))]  # fmt: skip
            arguments = tuple(f"--{axis.key}={value}" for axis, value in chosen if axis.key != CONFIG_AXIS)
            settings = {axis.name: value for axis, value in chosen}
            head = [safe_name(layers_label(value)) for axis, value in chosen if axis.key == CONFIG_AXIS]
            tail = [f"{axis.name}={safe_name(value)}" for axis, value in chosen if axis.key != CONFIG_AXIS]
            contents = [self._layer(path) for path in layers]
            grid = self._grid(contents, layers, [axis.key for axis, _ in chosen])
            if grid is None:
                label = ",".join(head + tail) or safe_name(config_name(contents, layers))
                configurations.append(Configuration(label, settings, None, tuple(layers), arguments))
                continue
            for policy in grid.expand():
                init_args = {
                    "T": policy.T, "ce_weight": policy.ce_weight, "kd_weight": policy.kd_weight,
                    "standardize": policy.standardize,
                }  # fmt: skip
                label = ",".join([*head, f"T={policy.T}", *tail])
                configurations.append(
                    Configuration(label, {**settings, "T": str(policy.T)}, ",".join(head + tail), tuple(layers),
                                  arguments, init_args)  # fmt: skip
                )
        labels = [configuration.label for configuration in configurations]
        for label in {label for label in labels if labels.count(label) > 1}:
            raise DistillError(
                f"two points of this sweep would share the folder {label!r} (a value listed twice, or values that "
                "differ only in characters a folder name cannot hold): make the --set values distinct"
            )
        return configurations

    def points(self) -> list[Point]:
        """Every (configuration, seed), seed by seed, numbered from 1."""
        configurations = self.configurations()
        pairs = [(configuration, seed) for seed in self.seeds for configuration in configurations]
        return [Point(index, configuration, seed) for index, (configuration, seed) in enumerate(pairs, start=1)]

    def _layer(self, path: str) -> dict:
        if path not in self._layer_cache:
            self._layer_cache[path] = read_layer(Path(path))
        return self._layer_cache[path]

    def _grid(self, contents: list[dict], layers: list[str], swept_keys: list[str]) -> GridTemperature | None:
        policy, source = merged_policy(contents, layers)
        if policy is None or policy.get("class_path", "").split(".")[-1] != GridTemperature.__name__:
            return None
        for key in swept_keys:
            if key in POLICY_KEYS:
                raise DistillError(
                    f"--set {key}=... replaces the GridTemperature of {source}: sweep the grid's values in that "
                    "file, or drop the grid layer and sweep policies with --set"
                )
            if key.startswith("model.temperature_policy.") and key.rsplit(".", 1)[-1] in ("T", "values"):
                raise DistillError(
                    f"--set {key}=...: the temperatures are the values of the GridTemperature in {source}; "
                    "list them there (or in a later layer that sets model.temperature_policy.init_args.values)"
                )
        try:
            return GridTemperature(**(policy.get("init_args") or {}))
        except (TypeError, ValueError) as error:
            raise DistillError(f"{source}: model.temperature_policy.init_args: {error}") from None

    def _config_seed(self) -> int:
        seed = 0  # LightningCLI's default here (seed_everything_default=0)
        for path in self.configs:
            seed = self._layer(path).get("seed_everything", seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DistillError(
                f"seed_everything is {seed!r} in the configs: a sweep needs known seeds, give --seeds N or "
                "--seeds 0,3,7"
            )
        return seed


def read_layer(path: Path) -> dict:
    """One config file as a dict (``{}`` when empty)."""
    if not path.is_file():
        raise DistillError(f"config file not found: {path}")
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DistillError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(settings, dict):
        raise DistillError(f"{path}: a config file must hold a mapping of keys, found {type(settings).__name__}")
    return settings


def merged_policy(contents: Sequence[dict], layers: Sequence[str]) -> tuple[dict | None, str | None]:
    """``model.temperature_policy`` after layering (``{"class_path", "init_args"}``) and the layer that chose it."""
    policy, source = None, None
    for settings, path in zip(contents, layers):
        value = (settings.get("model") or {}).get("temperature_policy")
        if isinstance(value, str):
            policy, source = {"class_path": value, "init_args": {}}, path
        elif isinstance(value, dict) and "class_path" in value:
            policy = {"class_path": str(value["class_path"]), "init_args": dict(value.get("init_args") or {})}
            source = path
        elif isinstance(value, dict) and policy is not None:
            policy["init_args"].update(value.get("init_args") or {})
    return policy, source


def config_name(contents: Sequence[dict], layers: Sequence[str]) -> str:
    """The run name the layers give (``trainer.logger.init_args.name``), else the last layer's file stem."""
    name = None
    for settings in contents:
        logger = (settings.get("trainer") or {}).get("logger")
        if isinstance(logger, dict):
            name = (logger.get("init_args") or {}).get("name", name)
    return str(name or Path(layers[-1]).stem)


def split_values(text: str, where: str) -> list[str]:
    """``"1,3,[20,25]"`` -> ``["1", "3", "[20,25]"]``: split as a YAML flow sequence, each value kept as written."""
    try:
        node = yaml.compose(f"[{text}]")
    except yaml.YAMLError as error:
        raise DistillError(f"{where}: cannot split {text!r} into values: {' '.join(str(error).split())}") from None
    # Each item's span in "[text]" (the marks count from the added "[").
    values = [text[item.start_mark.index - 1 : item.end_mark.index - 1].strip() for item in node.value]
    if not values or any(not value for value in values):
        raise DistillError(f"{where}: expected one or more values separated by commas, e.g. 1,3,9; got {text!r}")
    for value in {value for value in values if values.count(value) > 1}:
        raise DistillError(f"{where}: the value {value} is listed twice")
    return values


def parse_set(text: str) -> tuple[str, list[str]]:
    """``"KEY=V1,V2"`` -> ``(KEY, [V1, V2])`` (checked)."""
    key, equals, values = text.partition("=")
    key = key.strip().removeprefix("--")
    if not equals or not _KEY.fullmatch(key):
        raise DistillError(
            f"--set {text}: expected KEY=V1,V2,... with KEY a dotted key of distill fit, e.g. "
            "--set model.temperature_policy.init_args.kd_weight=1,3,9"
        )
    if key in RESERVED_KEYS:
        raise DistillError(f"--set {key}: {RESERVED_KEYS[key]}")
    return key, split_values(values, f"--set {key}")


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]`` (N seeds from 0); ``"0,3,7"`` -> ``[0, 3, 7]``."""
    message = f"--seeds {text}: expected a number of seeds N (seeds 0..N-1) or a list of seeds such as 0,3,7"
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DistillError(message) from None
    if "," not in text:
        if len(numbers) != 1 or numbers[0] < 1:
            raise DistillError(message)
        return list(range(numbers[0]))
    if not numbers or min(numbers) < 0 or len(set(numbers)) != len(numbers):
        raise DistillError(message + " (distinct, not negative)")
    return numbers


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest tail (without ``init_args``) that no other key shares:
    ``model.temperature_policy.init_args.kd_weight`` -> ``kd_weight``."""
    parts = {key: [part for part in key.split(".") if part not in ("init_args", "dict_kwargs")] for key in keys}
    names = {}
    for key, own in parts.items():
        for length in range(1, len(own) + 1):
            name = ".".join(own[-length:])
            others = [".".join(other[-length:]) for other_key, other in parts.items() if other_key != key]
            if name not in others:
                break
        names[key] = name
    return names


def check_extra(extra: Sequence[str]) -> None:
    """Refuse extra ``distill fit`` arguments that would move a run out of its folder or change its seed."""
    for argument in extra:
        key = argument.removeprefix("--").split("=", 1)[0] if argument.startswith("--") else None
        if argument == "-c" or key == "config":
            raise DistillError(
                f"extra argument {argument}: give config layers as --config before `--`, or sweep them with "
                "--set config=A.yaml,B.yaml"
            )
        if key in RESERVED_KEYS:
            raise DistillError(f"extra argument {argument}: {RESERVED_KEYS[key]}")


def sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (``"missing"`` when it is gone)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"


def safe_name(text: str) -> str:
    """``text`` made safe as (part of) a folder name: characters other than ``A-Za-z0-9._=+-`` become ``_``."""
    return _UNSAFE.sub("_", text)
