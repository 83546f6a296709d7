"""The settings of ``pml train``: the :class:`Settings` dataclass, its defaults and config files.

Settings come from three layers, each overriding the one before: the defaults below, a config
file (``--config FILE``: TOML, or YAML with PyYAML installed), and the command line. A run
folder's ``config.toml`` is written by :func:`dump_toml` and holds every setting, so
``pml train --config <run>/config.toml`` repeats the run.

Keyword-argument tables (``loss_args``, ``miner_args``, ...) belong to the class they were
given for: a layer that changes the class name (``--loss ContrastiveLoss``) drops the arguments
of the layers below; one that keeps the name adds its arguments to theirs.

TOML has no null: a name setting whose default is a class (``miner``, ``sampler``,
``scheduler``) is written ``"none"`` when switched off; the string ``"None"`` inside an
argument table stands for Python's None.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pml.cli._errors import UsageError

__all__ = [
    "ARG_TABLES",
    "PATH_FIELDS",
    "Settings",
    "changed_settings",
    "dump_toml",
    "load_settings",
    "merge_settings",
    "read_config",
]

#: name setting -> its keyword-argument table
ARG_TABLES = {
    "loss": "loss_args",
    "miner": "miner_args",
    "sampler": "sampler_args",
    "optimizer": "optimizer_args",
    "scheduler": "scheduler_args",
}
#: settings holding file paths (relative paths in a config file are relative to its folder)
PATH_FIELDS = ("data", "test_data", "labels")
_CHOICES = {
    "data_protocol": ("samples", "classes"),
    "mixed_precision": ("none", "bf16", "fp16"),
    "plot_method": ("pca", "tsne"),
}
_DATA_NAMES = ("digits", "digits:train", "digits:test", "digits:train+test")


@dataclasses.dataclass
class Settings:
    """Every setting of ``pml train`` (the defaults are the bundled-digits recipe).

    Attributes:
        data: ``"digits"`` (scikit-learn's bundled 8x8 digits), a folder of images with one
            sub-folder per class, or a ``.npy``/``.npz`` features file.
        test_data: held-out data of the same kinds; None splits ``data``.
        data_protocol: how ``data`` is split: ``"samples"`` (every class in both splits,
            stratified) or ``"classes"`` (disjoint classes: the open-set protocol).
        test_size: the held-out fraction of the samples (or of the classes).
        split_seed: the seed of the split (kept apart from ``seed``: the held-out set stays
            the same when the training seed changes).
        labels: a ``.npy`` file of labels for a ``.npy`` features file (default: a file
            named ``<stem>_labels.npy`` beside it).
        image_size: images are resized to ``image_size`` x ``image_size`` (RGB).
        model: ``"mlp"`` (the default network) or ``package.module:factory`` (a user's).
        hidden_size: width of the MLP's two hidden layers.
        embedding_size: size of the embeddings.
        loss, loss_args: the loss class of ``pml.losses`` and its keyword arguments.
        miner, miner_args: the miner of ``pml.miners`` (None: no miner).
        sampler, sampler_args: the sampler of ``pml.samplers`` (None: shuffled batches).
        distance: a ``pml.distances`` class given to the loss and the miner (None: theirs).
        reducer: a ``pml.reducers`` class given to the loss (None: its default).
        optimizer, optimizer_args, lr: a ``torch.optim`` class, its arguments, learning rate.
        scheduler, scheduler_args: a ``torch.optim.lr_scheduler`` class stepped once per
            epoch (``T_max`` defaults to ``epochs``; ``ReduceLROnPlateau`` follows MAP@R).
        epochs, batch_size: training length and batch size.
        seed: the seed of the weights, the sampler and every random draw of training.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mixed_precision: ``"none"``, ``"bf16"`` or ``"fp16"``.
        threads: CPU threads of PyTorch; 0 chooses (1 for models under a million
            parameters, where thread start-up costs more than it saves; PyTorch's default
            otherwise).
        num_workers: DataLoader worker processes.
        name: the run folder's name after the date and time (default: data and loss).
        runs_dir: where run folders are created.
        plot_method: the 2-D map of the test embeddings: ``"pca"`` or ``"tsne"``.
    """

    data: str = "digits"
    test_data: str | None = None
    data_protocol: str = "samples"
    test_size: float = 0.3
    split_seed: int = 0
    labels: str | None = None
    image_size: int = 32
    model: str = "mlp"
    hidden_size: int = 256
    embedding_size: int = 64
    loss: str = "TripletMarginLoss"
    loss_args: dict[str, Any] = dataclasses.field(default_factory=lambda: {"margin": 0.1})
    miner: str | None = "MultiSimilarityMiner"
    miner_args: dict[str, Any] = dataclasses.field(default_factory=lambda: {"epsilon": 0.1})
    sampler: str | None = "MPerClassSampler"
    sampler_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    distance: str | None = None
    reducer: str | None = None
    optimizer: str = "Adam"
    optimizer_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    lr: float = 1e-3
    scheduler: str | None = "CosineAnnealingLR"
    scheduler_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "none"
    threads: int = 0
    num_workers: int = 0
    name: str | None = None
    runs_dir: str = "runs"
    plot_method: str = "pca"

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (None kept), in field order."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _defaults() -> dict[str, Any]:
    return Settings().to_dict()


def merge_settings(
    layers: list[Mapping[str, Any]], base: Settings | None = None, *, where: list[str] | None = None
) -> Settings:
    """``base`` (default: the defaults) with each layer of raw values applied in turn.

    A layer maps setting names (dashes or underscores) to raw values: strings, numbers,
    booleans, None, and dicts or ``["key=value", ...]`` lists for the argument tables.

    Raises:
        UsageError: an unknown setting (with the closest names) or a value of the wrong
            kind; ``where`` names each layer's origin in the message.
    """
    from pml.cli._registry import parse_kwargs

    values = (base or Settings()).to_dict()
    for i, layer in enumerate(layers):
        origin = where[i] if where else "settings"
        layer = {str(k).replace("-", "_"): v for k, v in layer.items()}
        for key in layer:
            if key not in values:
                close = difflib.get_close_matches(key, list(values), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"unknown setting {key!r} in {origin}{hint}")
        for name, table in ARG_TABLES.items():
            if name in layer:
                new = _optional_name(name, layer[name], origin)
                if new != values[name]:
                    values[table] = {}
                values[name] = new
            if table in layer:
                raw = layer[table]
                if raw is not None and not isinstance(raw, (Mapping, list, tuple)):
                    raise UsageError(
                        f"{table} in {origin} must be a table of keyword arguments; got {raw!r}"
                    )
                added = parse_kwargs(raw, f"--{table[:-1].replace('_', '-')}")
                values[table] = {**values[table], **_nones_in(added)}
        for key, raw in layer.items():
            if key in ARG_TABLES or key in ARG_TABLES.values():
                continue
            values[key] = _convert(key, raw, origin)
    return Settings(**values)


def _nones_in(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if v == "None" else v) for k, v in args.items()}


def _optional_name(key: str, raw: Any, origin: str) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "")):
        if key in ("loss", "optimizer"):
            raise UsageError(f"{key} in {origin} is required; got {raw!r}")
        return None
    if not isinstance(raw, str):
        raise UsageError(f"{key} in {origin} must be a class name; got {raw!r}")
    return raw.strip()


_INT_FIELDS = ("split_seed", "image_size", "hidden_size", "embedding_size", "epochs")
_INT_FIELDS += ("batch_size", "seed", "threads", "num_workers")
_MINIMUM = {"image_size": 1, "hidden_size": 1, "embedding_size": 1, "epochs": 1}
_MINIMUM |= {"batch_size": 2, "seed": 0, "split_seed": 0, "threads": 0, "num_workers": 0}


def _convert(key: str, raw: Any, origin: str) -> Any:
    """A raw value of ``key`` as the type of its field (UsageError naming ``key``)."""
    if key in _INT_FIELDS:
        value = raw
        if isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                value = raw
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key} in {origin} must be an integer; got {raw!r}")
        if value < _MINIMUM[key]:
            raise UsageError(f"{key} in {origin} must be >= {_MINIMUM[key]}; got {value}")
        return value
    if key in ("lr", "test_size"):
        value = raw
        if isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                value = raw
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{key} in {origin} must be a number; got {raw!r}")
        value = float(value)
        if key == "lr" and not (math.isfinite(value) and value > 0):
            raise UsageError(f"lr in {origin} must be a positive number; got {raw!r}")
        if key == "test_size" and not 0 < value < 1:
            raise UsageError(f"test_size in {origin} must be between 0 and 1; got {raw!r}")
        return value
    optional = key in ("distance", "reducer", "test_data", "labels", "name")
    if optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", ""))):
        return None
    if not isinstance(raw, str):
        raise UsageError(f"{key} in {origin} must be a string; got {raw!r}")
    value = raw.strip()
    if key in _CHOICES:
        value = value.lower()
        if value not in _CHOICES[key]:
            raise UsageError(
                f"{key} in {origin} must be one of {', '.join(_CHOICES[key])}; got {raw!r}"
            )
    if key == "device":
        value = value.lower()
        if value not in ("auto", "cpu", "cuda") and not (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            raise UsageError(f"device in {origin} must be auto, cpu, cuda or cuda:N; got {raw!r}")
    if key == "name" and (os.sep in value or value in (".", "..")):
        raise UsageError(f"name in {origin} must be a plain name (no {os.sep!r}); got {raw!r}")
    return value


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw values of a TOML or YAML config file (paths made relative to its folder).

    Raises:
        UsageError: a missing or unreadable file, a YAML file without PyYAML installed.
    """
    file = Path(os.fspath(path))
    if not file.is_file():
        what = "a folder" if file.is_dir() else "missing"
        hint = f"; did you mean {file / 'config.toml'}?" if (file / "config.toml").is_file() else ""
        raise UsageError(f"config file {os.fspath(file)!r} is {what}{hint}")
    suffix = file.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UsageError(
                    f"reading {os.fspath(file)!r} needs PyYAML: pip install 'pml-all[yaml]' "
                    "(or write the config as TOML)"
                ) from None
            with file.open(encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
            raw = {} if raw is None else raw
        else:
            with file.open("rb") as fh:
                raw = tomllib.load(fh)
    except UsageError:
        raise
    except Exception as err:  # tomllib/yaml parse errors, OSError, UnicodeDecodeError
        raise UsageError(f"cannot read config file {os.fspath(file)!r}: {err}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"config file {os.fspath(file)!r} must hold a table of settings")
    for key in PATH_FIELDS:
        value = raw.get(key)
        relative = isinstance(value, str) and value.lower() not in ("", "none")
        if relative and value not in _DATA_NAMES and not os.path.isabs(os.path.expanduser(value)):
            raw[key] = os.fspath(file.parent / value)
    return raw


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """The settings of a config file: a run's ``config.toml`` or a user's TOML/YAML file.

    A run folder is accepted too (its ``config.toml`` is read). Settings missing from the
    file keep their defaults.

    Raises:
        UsageError: a missing or unreadable file, an unknown setting, a bad value.
    """
    file = Path(os.fspath(path))
    if file.is_dir() and (file / "config.toml").is_file():
        file = file / "config.toml"
    return merge_settings([read_config(file)], where=[os.fspath(file)])


def changed_settings(settings: Settings) -> dict[str, Any]:
    """The settings that differ from the defaults (field order)."""
    defaults = _defaults()
    return {k: v for k, v in settings.to_dict().items() if v != defaults[k]}


# ---------------------------------------------------------------------------- TOML writer
def dump_toml(settings: Settings, header: str = "") -> str:
    """``settings`` as TOML text that :func:`load_settings` reads back to equal settings."""
    defaults = _defaults()
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = []
    for key, value in settings.to_dict().items():
        if isinstance(value, dict):
            tables.append((key, value))
            continue
        if value is None:
            if defaults[key] is None:
                continue
            value = "none"
        lines.append(f"{key} = {_toml_value(value, key)}")
    for key, table in tables:
        lines.append("")
        lines.append(f"[{key}]")
        for k, v in table.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v, f'{key}.{k}')}")
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any, where: str) -> str:
    if value is None:
        return '"None"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_key(str(k))} = {_toml_value(v, where)}" for k, v in value.items()
        )
        return "{ " + items + " }" if items else "{}"
    raise UsageError(
        f"{where} = {value!r} cannot be written to config.toml (use numbers, strings, "
        "booleans, lists or tables)"
    )
