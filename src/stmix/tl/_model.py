"""The trained imputer: a network, the genes it predicts, how it was trained; save and load."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix._io import atomic_folder
from stmix.nn.head import ExpressionHead
from stmix.nn.images import to_input
from stmix.nn.model import ExpressionPredictor
from stmix.tl._batches import batches, is_lazy
from stmix.tl._device import autocast, resolve_device

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class Imputer:
    """A trained image-to-expression model, as returned by :func:`stmix.tl.fit`.

    Attributes
    ----------
    module
        The network (pure PyTorch): an :class:`~stmix.nn.ExpressionPredictor` that takes patches
        (``kind == "image"``), or an :class:`~stmix.nn.ExpressionHead` that takes an embedding
        (``kind == "head"``, trained with ``use_rep``).
    config
        Everything needed to rebuild it and to know what it predicts: ``kind``, ``backbone``,
        ``genes``, ``patch_size``, ``dropout``, ``target``, the fit ``params``, ``best_epoch``;
        for heads also ``head``, ``use_rep``, ``in_features`` and ``embedding`` (how the
        embedding was made, to make it again for new spots).
    history
        One dict per epoch: the training loss terms, ``val_mse``, ``val_mae``, ``val_pcc``,
        ``lr`` and ``seconds``.
    """

    def __init__(
        self, module: ExpressionPredictor, config: dict, history: list[dict] | None = None
    ):
        self.module = module
        self.config = config
        self.history = list(history or [])

    @property
    def genes(self) -> list[str]:
        """The genes the model predicts, in output order."""
        return list(self.config["genes"])

    @property
    def kind(self) -> str:
        """``"image"`` (takes patches) or ``"head"`` (takes an embedding)."""
        return str(self.config.get("kind", "image"))

    @property
    def patch_size(self) -> int | None:
        """Side of the patches the model (or its embedding) takes, in pixels."""
        size = self.config.get("patch_size")
        return None if size is None else int(size)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.module.parameters()).device

    def __repr__(self) -> str:
        best = self.config.get("best_epoch")
        what = (
            f"{self.config['backbone']}, {len(self.genes)} genes, {self.patch_size} px patches"
            if self.kind == "image"
            else f"{self.config['head']} head on obsm[{self.config['use_rep']!r}] "
            f"({self.config['backbone']}), {len(self.genes)} genes"
        )
        return (
            f"Imputer({what}, augment={self.config.get('augment')!r}"
            + (
                f", best epoch {best}"
                if best is not None and self.config.get("head") != "ridge"
                else ""
            )
            + ")"
        )

    @torch.inference_mode()
    def predict(
        self,
        patches: np.ndarray | torch.Tensor,
        *,
        batch_size: int = 128,
        device: str | torch.device = "auto",
        progress: bool = False,
    ) -> np.ndarray:
        """Predicted expression (n, genes), float32.

        The input is uint8 patches (n, size, size, 3) for an image model, embeddings (n,
        in_features) for a head. ``device``: ``"auto"`` (CUDA, MPS, else the CPU) or a torch
        device; the model moves there.
        """
        if not is_lazy(patches):
            patches = torch.as_tensor(
                np.asarray(patches) if not torch.is_tensor(patches) else patches
            )
        if self.kind == "head":
            width = int(self.config["in_features"])
            if patches.ndim != 2 or patches.shape[1] != width:
                raise ValueError(
                    f"The head takes embeddings of shape (n, {width}), not "
                    f"{tuple(patches.shape)}: compute them as stmix.tl.embed did (backbone "
                    f"{self.config['backbone']!r})."
                )
        elif patches.ndim != 4 or patches.shape[1:] != (self.patch_size, self.patch_size, 3):
            raise ValueError(
                f"The model takes uint8 patches of shape (n, {self.patch_size}, "
                f"{self.patch_size}, 3), not {tuple(patches.shape)}; cut them with "
                f"stmix.pp.patches(adata, size={self.patch_size})."
            )
        target = resolve_device(device)
        self.module.to(target)
        pred = predict_batches(
            self.module, patches, device=target, batch_size=batch_size, progress=progress
        )
        return pred.cpu().numpy()

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the weights (``model.safetensors``) and ``config.json`` into folder ``path``.

        The folder is written under a temporary name and renamed into place when complete. A
        folder that holds anything stmix did not write (another ``config.json`` included) is
        refused; a previous stmix model there is replaced only with ``overwrite=True``.
        """
        from safetensors.torch import save_file

        path = Path(path)
        check_save_target(path, overwrite)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        record = {"config": self.config, "history": self.history}
        with atomic_folder(path) as folder:
            save_file(state, str(folder / WEIGHTS_FILE))
            (folder / CONFIG_FILE).write_text(json.dumps(plain(record), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "auto") -> Imputer:
        """The model saved in folder ``path`` by :meth:`save`, its files checked."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a saved stmix model (it needs {CONFIG_FILE} and {WEIGHTS_FILE})."
            )
        config, history = _read_config(path / CONFIG_FILE)
        module = build_module(config)
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(
                f"{path / WEIGHTS_FILE} cannot be read ({error}): the model folder is damaged; "
                f"save the model again."
            ) from None
        damaged = [
            name for name, t in state.items() if t.is_floating_point() and not t.isfinite().all()
        ]
        if damaged:
            raise ValueError(
                f"{path / WEIGHTS_FILE} holds NaN or infinite weights ({', '.join(damaged[:3])}): "
                f"the model folder is damaged, or its training diverged; train it again."
            )
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).split("\n")[1].strip() if "\n" in str(error) else str(error)
            raise ValueError(
                f"{path / WEIGHTS_FILE} does not fit {CONFIG_FILE} ({len(config['genes'])} genes, "
                f"backbone {config['backbone']!r}): {first}"
            ) from None
        module.to(resolve_device(device)).eval()
        return cls(module, config, history)


def check_save_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace what stmix did not write; replace a model only when told."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is a file; a model is saved as a folder.")
    contents = {entry.name for entry in path.iterdir()}
    foreign = sorted(contents - {WEIGHTS_FILE, CONFIG_FILE})
    if CONFIG_FILE in contents and not _is_stmix_config(path / CONFIG_FILE):
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


def _is_stmix_config(file: Path) -> bool:
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "stmix_version" in (record.get("config") or {})


def _read_config(file: Path) -> tuple[dict, list]:
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
        need("head", lambda v: v in ("linear", "mlp", "ridge"), "'linear', 'mlp' or 'ridge'")
        if config.get("patch_size") is not None:
            need("patch_size", integer(8, 4096), "an integer from 8 to 4096 pixels")
    if "dropout" in config:
        need("dropout", lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)")
    saved = str(config.get("stmix_version", "0"))
    if _newer(saved, stmix_version()):
        warnings.warn(
            f"{file} was saved by stmix {saved}, newer than the installed {stmix_version()}; "
            f"update stmix if loading or predicting fails.",
            UserWarning,
            stacklevel=3,
        )
    history = record.get("history") or []
    return config, history if isinstance(history, list) else []


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


@torch.inference_mode()
def predict_batches(
    module: torch.nn.Module,
    patches: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Predictions (float32, on ``device``) of patches or embeddings, in batches, in eval mode.

    Each batch moves to ``device`` (a no-op for patches already there) and runs under bf16
    autocast on CUDA; the module's train/eval mode is restored afterwards.
    """
    was_training = module.training
    module.eval()
    out = []
    bar = tqdm(total=len(patches), desc="predict", unit="spot", disable=not progress, leave=False)
    for batch in batches(patches, batch_size):  # lazy patches: read by DataLoader workers
        batch = batch.to(device, non_blocking=True)
        with autocast(device):
            out.append(module(to_input(batch)).float())
        bar.update(len(batch))
    bar.close()
    module.train(was_training)
    if not out:
        return torch.empty((0, module.offset.shape[0]), device=device)
    return torch.cat(out)


def build_module(config: dict) -> torch.nn.Module:
    """An untrained network of the architecture ``config`` describes (weights load after)."""
    if config.get("kind", "image") == "head":
        return ExpressionHead(
            int(config["in_features"]),
            len(config["genes"]),
            kind="linear" if config["head"] == "ridge" else config["head"],
            hidden=int(config.get("hidden", 256)),
            dropout=config.get("dropout", 0.2),
        )
    return ExpressionPredictor(
        len(config["genes"]),
        config["backbone"],
        pretrained=False,
        dropout=config.get("dropout", 0.2),
        img_size=config["patch_size"],
        backbone_kwargs=config.get("backbone_kwargs") or None,
    )


def load(path: str | os.PathLike, *, device: str | torch.device = "auto") -> Imputer:
    """Load a model saved with :meth:`Imputer.save`.

    Parameters
    ----------
    path
        The folder written by ``model.save(path)``.
    device
        Where to put the weights: ``"auto"`` (CUDA, MPS, else the CPU) or a torch device.

    Returns
    -------
    stmix.tl.Imputer
        The :class:`Imputer`; its predictions equal those of the saved model.
    """
    return Imputer.load(path, device=device)


def plain(value: Any) -> Any:
    """JSON- and h5ad-friendly copy: numpy scalars and arrays to Python, None kept for JSON."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)  # paths, torch devices ...
