"""A saved model's folder: its two files, and its ``config.json`` read and checked.

Pure Python (no torch), so the command line checks a model and its genes before the slow
imports.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from stmix._model_config import SCHEMA, ModelConfig
from stmix.nn.constants import HEADS

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: Spread, interval and flag calibration (stmix.tl._uncertainty), when the fit had validation spots.
CALIBRATION_FILE = "calibration.safetensors"


def genes(folder: Path) -> list[str]:
    """The genes the model saved in ``folder`` predicts, from its checked ``config.json``."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved stmix model (it needs {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    config, _ = read_config(folder / CONFIG_FILE)
    return list(config.genes)


def check_save_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace what stmix did not write; replace a model only when told."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is a file; a model is saved as a folder.")
    contents = {entry.name for entry in path.iterdir()}
    foreign = sorted(contents - {WEIGHTS_FILE, CONFIG_FILE, CALIBRATION_FILE})
    if CONFIG_FILE in contents and not is_stmix_config(path / CONFIG_FILE):
        foreign.append(f"{CONFIG_FILE} (not an stmix model's)")
    if foreign:
        raise FileExistsError(
            f"{path} holds files stmix did not write ({', '.join(foreign[:3])}); save the model "
            f"into a new or empty folder."
        )
    if contents and not overwrite:
        raise FileExistsError(
            f"{path} holds a saved stmix model; pass overwrite=True (--overwrite) to replace it."
        )


def is_stmix_config(file: Path) -> bool:
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "stmix_version" in (record.get("config") or {})


def read_config(file: Path) -> tuple[ModelConfig, list]:
    """``config.json``, checked: what a model needs, of the right types and in range."""
    try:
        record = json.loads(file.read_text())
    except ValueError as error:
        raise ValueError(f"{file} is not valid JSON ({error}); save the model again.") from None
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{file} has no 'config' object: it is not an stmix model's.")

    def need(key, check, what):
        if key not in config:
            raise ValueError(f"{file} lacks {key!r}: it is incomplete; save the model again.")
        if not check(config[key]):
            raise ValueError(f"{file}: {key!r} must be {what}, not {config[key]!r}.")

    def integer(lo, hi):
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    kind = config.get("kind", "image")
    if kind not in ("image", "head"):
        raise ValueError(f"{file}: 'kind' must be 'image' or 'head', not {kind!r}.")
    need(
        "genes",
        lambda v: isinstance(v, list) and v and all(isinstance(g, str) for g in v),
        "a non-empty list of gene names",
    )
    if len(set(config["genes"])) != len(config["genes"]):
        duplicated = sorted({g for g in config["genes"] if config["genes"].count(g) > 1})
        raise ValueError(f"{file} lists genes more than once: {duplicated[:5]}.")
    need("backbone", lambda v: isinstance(v, str) and v, "a timm model name")
    if kind == "image":
        need("patch_size", integer(8, 4096), "an integer from 8 to 4096 pixels")
    else:
        need("in_features", integer(1, 1 << 20), "a positive integer")
        need("head", lambda v: v in HEADS, " or ".join(map(repr, HEADS)))
        if config.get("patch_size") is not None:
            need("patch_size", integer(8, 4096), "an integer from 8 to 4096 pixels")
    _optional(config, file)
    saved = str(config.get("stmix_version", "0"))
    if _newer(saved, stmix_version()):
        warnings.warn(
            f"{file} was saved by stmix {saved}, newer than the installed {stmix_version()}; "
            f"update stmix if loading or predicting fails.",
            UserWarning,
            stacklevel=3,
        )
    schema = config.get("schema", SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA:
        raise ValueError(
            f"{file} has config schema {schema}, newer than this stmix reads ({SCHEMA}): it was "
            f"saved by stmix {saved}; update stmix (pip install -U stmix) to load it."
        )
    history = record.get("history") or []
    return ModelConfig.from_json(config), history if isinstance(history, list) else []


def _number(lo: float, hi: float, *, low_open: bool = False):
    def check(v) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            return False
        return (lo < v if low_open else lo <= v) and v <= hi

    return check


#: The keys a model may hold that older or head models lack: each checked when present (None is
#: "not set"), so a hand-edited config fails here with its key named, not deep in the network.
_OPTIONAL = {
    "dropout": (lambda v: _number(0, 1)(v) and v < 1, "a number in [0, 1)"),
    "hidden": (lambda v: _number(1, 1 << 20)(v) and isinstance(v, int), "a positive integer"),
    "spot_scale": (_number(0, 100, low_open=True), "a number above 0"),
    "spot_diameter_px": (_number(0, 1e6, low_open=True), "a number of pixels above 0"),
    "spot_diameter_um": (_number(0, 1e6, low_open=True), "a number of microns above 0"),
    "backbone_kwargs": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "an object of timm keyword arguments",
    ),
    "augment": (lambda v: isinstance(v, str), "a method name"),
    "target": (lambda v: isinstance(v, str), "'expression' or 'delta'"),
    "use_rep": (lambda v: isinstance(v, str), "an obsm key"),
    "layer": (lambda v: isinstance(v, str), "a layer name"),
    "stain": (
        lambda v: isinstance(v, dict) and (not v or isinstance(v.get("target"), dict)),
        "an object with the 'target' colours of its patches",
    ),
    "scales": (
        lambda v: (
            isinstance(v, list)
            and v[:1] == [1]
            and all(_number(0, 100, low_open=True)(s) for s in v)
        ),
        "a list of fields of view, in spot patches, starting with 1",
    ),
    "uncertainty": (
        lambda v: isinstance(v, dict) and v.get("method") in (None, "dropout", "ridge", "constant"),
        "an object whose 'method' is 'dropout', 'ridge' or 'constant'",
    ),
}


def _optional(config: dict, file: Path) -> None:
    for key, (check, what) in _OPTIONAL.items():
        value = config.get(key)
        if value is not None and not check(value):
            raise ValueError(f"{file}: {key!r} must be {what}, not {value!r}.")


def stmix_version() -> str:
    import stmix

    return stmix.__version__


def _newer(a: str, b: str) -> bool:
    """Whether version ``a`` is newer than ``b`` (numeric parts compared)."""

    def parts(version: str) -> tuple[int, ...]:
        numbers = []
        for piece in version.split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            if not digits:
                break
            numbers.append(int(digits))
        return tuple(numbers)

    return parts(a) > parts(b)
