"""The trained imputer: a network, the genes it predicts, how it was trained; save and load."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix.nn.images import to_float
from stmix.nn.model import ExpressionPredictor
from stmix.tl._device import autocast, resolve_device

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class Imputer:
    """A trained image-to-expression model, as returned by :func:`stmix.tl.fit`.

    Attributes
    ----------
    module
        The :class:`~stmix.nn.ExpressionPredictor` (pure PyTorch).
    config
        Everything needed to rebuild it and to know what it predicts: ``backbone``, ``genes``,
        ``patch_size``, ``dropout``, ``target``, the fit ``params``, ``best_epoch`` ...
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
    def patch_size(self) -> int:
        """Side of the patches the model takes, in pixels."""
        return int(self.config["patch_size"])

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.module.parameters()).device

    def __repr__(self) -> str:
        best = self.config.get("best_epoch")
        return (
            f"Imputer({self.config['backbone']}, {len(self.genes)} genes, "
            f"{self.patch_size} px patches, augment={self.config.get('augment')!r}"
            + (f", best epoch {best}" if best is not None else "")
            + ")"
        )

    @torch.inference_mode()
    def predict(
        self,
        patches: np.ndarray | torch.Tensor,
        *,
        batch_size: int = 128,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Predicted expression (n, genes), float32, of uint8 patches (n, size, size, 3)."""
        patches = torch.as_tensor(np.asarray(patches) if not torch.is_tensor(patches) else patches)
        if patches.ndim != 4 or patches.shape[1:] != (self.patch_size, self.patch_size, 3):
            raise ValueError(
                f"The model takes uint8 patches of shape (n, {self.patch_size}, "
                f"{self.patch_size}, 3), not {tuple(patches.shape)}; cut them with "
                f"stmix.pp.patches(adata, size={self.patch_size})."
            )
        target = resolve_device(device) if device is not None else self.device
        self.module.to(target)
        pred = predict_batches(
            self.module, patches, device=target, batch_size=batch_size, progress=progress
        )
        return pred.cpu().numpy()

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the weights (``model.safetensors``) and ``config.json`` into folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True.")
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        record = {"config": self.config, "history": self.history}
        (path / CONFIG_FILE).write_text(json.dumps(plain(record), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Imputer:
        """The model saved in folder ``path`` by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a saved stmix model (it needs {CONFIG_FILE} and {WEIGHTS_FILE})."
            )
        record = json.loads((path / CONFIG_FILE).read_text())
        config = record["config"]
        module = build_module(config)
        module.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        module.to(resolve_device(device)).eval()
        return cls(module, config, record.get("history"))


@torch.inference_mode()
def predict_batches(
    module: ExpressionPredictor,
    patches: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Predictions (float32, on ``device``) of uint8 patches, in batches, in eval mode.

    Each batch moves to ``device`` (a no-op for patches already there) and runs under bf16
    autocast on CUDA; the module's train/eval mode is restored afterwards.
    """
    was_training = module.training
    module.eval()
    out = []
    bar = tqdm(total=len(patches), desc="predict", unit="spot", disable=not progress, leave=False)
    for start in range(0, len(patches), batch_size):
        batch = patches[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            out.append(module(to_float(batch)).float())
        bar.update(len(batch))
    bar.close()
    module.train(was_training)
    if not out:
        return torch.empty((0, module.head.out_features), device=device)
    return torch.cat(out)


def build_module(config: dict) -> ExpressionPredictor:
    """An untrained network of the architecture ``config`` describes (weights load after)."""
    return ExpressionPredictor(
        len(config["genes"]),
        config["backbone"],
        pretrained=False,
        dropout=config.get("dropout", 0.2),
        img_size=config["patch_size"],
    )


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Imputer:
    """Load a model saved with :meth:`Imputer.save`.

    Parameters
    ----------
    path
        The folder written by ``model.save(path)``.
    device
        Where to put the weights.

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
