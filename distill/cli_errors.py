"""Bad input to the ``distill`` command as one line: config files that do not parse, arguments that do not
validate, constructors that refuse their values.

jsonargparse reports a value that fails to parse as a multi-line, nested message (and, with its default
``exit_on_error``, after hundreds of lines of usage), and wraps an exception raised by a constructor
during instantiation in further ``ValueError``/``TypeError`` layers with tracebacks. The command parses
with ``exit_on_error=False`` and turns what comes out into ``DistillError`` lines here:

    data.batch_size: got 'x', expected int
    model.temperature_policy: unknown policy 'NoSuchTemperature': choose one of CurriculumTemperature, ...
    config file configs/x.yaml, line 3, column 8: did not find expected ',' or ']'
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import yaml

from distill.errors import DistillError

# jsonargparse's phrases for a class name it cannot import or that is not of the expected base class.
UNKNOWN_CLASS_PHRASES = (
    "Expected a dot import path string",
    "either not accessible or invalid",
    "does not correspond to a subclass",
    "Import path",
    "No module named",
)


def _classes(module, base: type) -> list[str]:
    """Names of the public subclasses of ``base`` (not ``base`` itself) exported by ``module``."""
    names = getattr(module, "__all__", dir(module))
    found = [getattr(module, name) for name in names]
    return sorted(item.__name__ for item in found if inspect.isclass(item) and issubclass(item, base) and item != base)


def choices_for(key: str) -> tuple[str, list[str]] | None:
    """``(kind, names)`` of the classes a config key accepts by short name, for the keys that select one."""
    import distill.data
    import distill.divergences
    import distill.policies

    if key.endswith("temperature_policy"):
        return "policy", _classes(distill.policies, distill.policies.TemperaturePolicy)
    if key.endswith("divergence"):
        return "divergence", _classes(distill.divergences, distill.divergences.Divergence)
    if key == "data":
        return "data module", _classes(distill.data, L.LightningDataModule)
    return None


def config_file_arguments(argv: Iterable[str]) -> list[str]:
    """The values of every ``--config X`` / ``--config=X`` (or ``-c``) in ``argv``."""
    argv = list(argv)
    files = []
    for position, argument in enumerate(argv):
        if argument.startswith(("--config=", "-c=")):
            files.append(argument.split("=", 1)[1])
        elif argument in ("--config", "-c") and position + 1 < len(argv):
            files.append(argv[position + 1])
    return files


def check_config_files(argv: Iterable[str]) -> None:
    """Every ``--config`` file exists and is a YAML mapping; else one ``DistillError`` line with file and line.

    jsonargparse reports a YAML error without the file's name (``in "<unicode string>"``); reading each file
    here first names it.
    """
    for name in config_file_arguments(argv):
        path = Path(name)
        if not path.is_file():
            raise DistillError(
                f"--config {name}: file not found (give the path of a YAML config layer, e.g. configs/base.yaml)"
            )
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise DistillError(f"config file {name}{where}: {problem}; fix the YAML there") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DistillError(f"config file {name}: cannot read it ({error})") from None
        if content is not None and not isinstance(content, dict):
            raise DistillError(
                f"config file {name}: got a YAML {type(content).__name__}, expected a mapping of settings "
                "(key: value lines)"
            )


def _expected_type(text: str) -> str | None:
    """What jsonargparse expected, in words (``int``, ``int or null``, ``one of 'both', 'teacher'``), from the part of
    its message about the innermost key: a union's subtypes when they come first, else the first ``Expected a ...``."""
    subtypes = re.search(r"Subtypes: \[([^\]]*)\]", text)
    expected = re.search(r"Expected a (.*?)\. Got value", text) or re.search(r"Expected a (<class '[\w.]+'>)", text)
    if subtypes and (expected is None or subtypes.start() < expected.start()):
        names = re.findall(r"<class '([\w.]+)'>", subtypes.group(1))
        words = ["null" if name == "NoneType" else name.split(".")[-1] for name in names]
        return " or ".join(words) if words else None
    if expected is None:
        return None
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", expected.group(1))
    if literal:
        return f"one of {literal.group(1)}"
    single = re.fullmatch(r"<class '([\w.]+)'>", expected.group(1))
    return single.group(1).split(".")[-1] if single else expected.group(1)


def argument_error_line(message: str) -> str:
    """One line from a jsonargparse parse error message (nested, multi-line)."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    key = ".".join(dict.fromkeys(keys))  # nested keys, e.g. data + batch_size -> data.batch_size
    # The innermost key's part of the message holds the value as given and what its type expects.
    innermost = message[message.rfind('Parser key "') :] if keys else message
    given = re.search(r"(?:Got value|Given value): (.*)", innermost)
    value = given.group(1).strip() if given else None
    message_for_type = innermost
    unaccepted = re.search(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if key and unaccepted:
        return unaccepted_argument_line(key, *unaccepted.groups())
    if key and value is not None and any(phrase in message for phrase in UNKNOWN_CLASS_PHRASES):
        known = choices_for(key)
        if known is not None:
            kind, names = known
            return (
                f"{key}: unknown {kind} {value!r}: choose one of {', '.join(names)} "
                f"(e.g. --{key}={names[0]}), or give a full class path"
            )
    if key and value is not None:
        expected = _expected_type(message_for_type)
        if expected is not None and not value.startswith(("NestedArg", "Namespace")):
            return f"{key}: got {value!r}, expected {expected}"
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    if key:
        # The innermost reason: the last line that is neither a key header nor jsonargparse's bookkeeping.
        bookkeeping = ("Parser key", "Subtypes", "Errors", "Given value")
        reasons = [line for line in lines if not line.startswith(bookkeeping)]
        reason = reasons[-1] if reasons else " ".join(lines)
        return f"{key}: {reason}"
    return " ".join(lines)


def unaccepted_argument_line(key: str, class_path: str, option: str) -> str:
    """``--<key>.<option>`` given while ``<key>`` is a class that has no such argument (often: the argument came
    before the ``--<key>=<class>`` it belongs to, or a layer set another class)."""
    try:
        module, _, name = class_path.rpartition(".")
        signature = inspect.signature(getattr(importlib.import_module(module), name))
        parameters = [parameter for parameter in signature.parameters if parameter != "self"]
        takes = f"it takes {', '.join(parameters)}" if parameters else "it takes no arguments"
    except (ImportError, AttributeError, ValueError, TypeError):
        name, takes = class_path, "see its signature"
    return (
        f"{key}.{option}: {name} has no argument {option!r} ({takes}); to set it for another class, give that class "
        f"first: --{key}=<class> --{key}.{option}=<value>"
    )


def instantiation_error_line(error: BaseException) -> str:
    """One line for an exception raised while the CLI built its objects: a ``DistillError`` in the chain as it
    is, else the innermost exception's message (a third-party constructor's ``ValueError``)."""
    chain = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, DistillError):
            return str(item)
    text = str(chain[-1]) or type(chain[-1]).__name__
    keys = re.findall(r'Parser key "([^"]+)"', str(error))
    prefix = f"{'.'.join(dict.fromkeys(keys))}: " if keys else ""
    return prefix + " ".join(text.split())


def check_run_values(config) -> None:
    """Trainer and run values that Lightning accepts but that cannot train (one ``DistillError`` line each)."""
    epochs = config.get("trainer.max_epochs")
    counted = isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1
    if not (epochs is None or epochs == -1 or counted):
        raise DistillError(
            f"trainer.max_epochs: got {epochs!r}, expected a number of epochs >= 1 (or -1: no limit); "
            "to evaluate a checkpoint without training use `distill test --ckpt_path ...`"
        )
    steps = config.get("trainer.max_steps")
    if steps is not None and (not isinstance(steps, int) or (steps < 1 and steps != -1)):
        raise DistillError(f"trainer.max_steps: got {steps!r}, expected a number of steps >= 1 (or -1: no limit)")
    every = config.get("checkpoint_every_n_steps")
    if every is not None and (not isinstance(every, int) or every < 0):
        raise DistillError(
            f"checkpoint_every_n_steps: got {every!r}, expected a number of steps >= 0 (0: checkpoints only per epoch)"
        )
