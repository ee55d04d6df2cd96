"""The trained imputer: a network, the genes it predicts, how it was trained; save and load."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from stmix._io import atomic_folder
from stmix._model_config import ModelConfig
from stmix._model_files import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_save_target,
    read_config,
)
from stmix.nn.head import ExpressionHead
from stmix.nn.images import to_input
from stmix.nn.model import ExpressionPredictor
from stmix.tl._batches import batches, is_lazy
from stmix.tl._device import autocast, resolve_device
from stmix.tl._uncertainty import Calibration


class Imputer:
    """A trained image-to-expression model, as returned by :func:`stmix.tl.fit`.

    Attributes
    ----------
    module
        The network (pure PyTorch): an :class:`~stmix.nn.ExpressionPredictor` that takes patches
        (``kind == "image"``), or an :class:`~stmix.nn.ExpressionHead` that takes an embedding
        (``kind == "head"``, trained with ``use_rep``).
    config
        A :class:`~stmix.tl.ModelConfig`: everything needed to rebuild the network and to know
        what it predicts: ``kind``, ``backbone``, ``genes``, ``patch_size``, ``dropout``,
        ``target``, the fit ``params``, ``best_epoch``; for heads also ``head``, ``use_rep``,
        ``in_features`` and ``embedding`` (how the embedding was made, to make it again for new
        spots). Read by attribute or by key, as ``config.json`` holds it.
    history
        One dict per epoch: the training loss terms, ``val_mse``, ``val_mae``, ``val_pcc``,
        ``lr`` and ``seconds``.
    calibration
        What ``tl.impute(..., interval=)`` needs for the spread, the bounds and the flag of
        unfamiliar tissue (:class:`~stmix.tl._uncertainty.Calibration`), fitted on the
        validation spots; ``None`` for a model trained without them.
    """

    def __init__(
        self,
        module: ExpressionPredictor | ExpressionHead,
        config: ModelConfig | dict,
        history: list[dict] | None = None,
        calibration: Calibration | None = None,
    ):
        self.module = module
        self.config = config if isinstance(config, ModelConfig) else ModelConfig.from_json(config)
        self.history = list(history or [])
        self.calibration = calibration

    @property
    def genes(self) -> list[str]:
        """The genes the model predicts, in output order."""
        return list(self.config.genes)

    @property
    def kind(self) -> str:
        """``"image"`` (takes patches) or ``"head"`` (takes an embedding)."""
        return self.config.kind

    @property
    def patch_size(self) -> int | None:
        """Side of the patches the model (or its embedding) takes, in pixels."""
        size = self.config.patch_size
        return None if size is None else int(size)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.module.parameters()).device

    def __repr__(self) -> str:
        config = self.config
        what = (
            f"{config.backbone}, {len(self.genes)} genes, {self.patch_size} px patches"
            if self.kind == "image"
            else f"{config.head} head on obsm[{config.use_rep!r}] "
            f"({config.backbone}), {len(self.genes)} genes"
        )
        best = config.best_epoch
        shown = best is not None and config.head != "ridge"
        return f"Imputer({what}, augment={config.augment!r}" + (
            f", best epoch {best})" if shown else ")"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: (size, size, 3 * fields of view), or (in_features,)."""
        if self.kind == "head":
            return (int(self.config.in_features),)
        return (self.patch_size, self.patch_size, 3 * len(self.config.scales))

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

        The input is uint8 patches (n, size, size, 3) for an image model (n, size, size, 3k
        with k fields of view: :attr:`input_shape`), embeddings (n, in_features) for a head.
        ``device``: ``"auto"`` (CUDA, MPS, else the CPU) or a torch device; the model moves
        there.
        """
        if not is_lazy(patches):
            patches = torch.as_tensor(
                np.asarray(patches) if not torch.is_tensor(patches) else patches
            )
        if self.kind == "head":
            width = int(self.config.in_features)
            if patches.ndim != 2 or patches.shape[1] != width:
                raise ValueError(
                    f"The head takes embeddings of shape (n, {width}), not "
                    f"{tuple(patches.shape)}: compute them as stmix.tl.embed did (backbone "
                    f"{self.config.backbone!r})."
                )
        elif patches.ndim != 4 or patches.shape[1:] != self.input_shape:
            size, _, channels = self.input_shape
            how = f"cut them with stmix.pp.patches(adata, size={size})"
            if len(self.config.scales) > 1:
                how = (
                    f"the spot's patch and its wider fields of view (scales "
                    f"{self.config.scales}) stacked along the channels, as stmix.tl.impute "
                    f"cuts them"
                )
            raise ValueError(
                f"The model takes uint8 patches of shape (n, {size}, {size}, {channels}), not "
                f"{tuple(patches.shape)}: {how}."
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
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        path = Path(path)
        check_save_target(path, overwrite)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        record = {"config": self.config.to_json(), "history": self.history}
        try:
            with atomic_folder(path) as folder:
                (folder / CONFIG_FILE).write_text(json.dumps(plain(record), indent=1))
                save_file(state, str(folder / WEIGHTS_FILE))
                if self.calibration is not None:
                    save_file(self.calibration.tensors(), str(folder / CALIBRATION_FILE))
                # safetensors creates its file for the owner alone; give it config.json's mode
                # (the user's umask), so that whoever may read the config may load the weights
                for name in (WEIGHTS_FILE, CALIBRATION_FILE):
                    if (folder / name).exists():
                        os.chmod(folder / name, (folder / CONFIG_FILE).stat().st_mode & 0o777)
        except (SafetensorError, OSError) as error:
            reason = getattr(error, "strerror", None) or _os_message(str(error))
            raise OSError(
                f"Could not write the model into {path} ({reason}); nothing was left there "
                f"(a model already in it is as it was)."
            ) from None
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
        config, history = read_config(path / CONFIG_FILE)
        module = build_module(config)
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except PermissionError:
            raise PermissionError(
                f"{path / WEIGHTS_FILE} is not readable by this user; its owner can allow it "
                f"with `chmod a+r {path / WEIGHTS_FILE}`."
            ) from None
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
                f"{path / WEIGHTS_FILE} does not fit {CONFIG_FILE} ({len(config.genes)} genes, "
                f"backbone {config.backbone!r}): {first}"
            ) from None
        module.to(resolve_device(device)).eval()
        return cls(module, config, history, _read_calibration(path, config))


def _read_calibration(path: Path, config: ModelConfig) -> Calibration | None:
    """The model's calibration file, when it was saved with one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    method = (config.uncertainty or {}).get("method")
    if method is None or not (path / CALIBRATION_FILE).is_file():
        return None
    try:
        return Calibration.from_tensors(load_file(str(path / CALIBRATION_FILE)), method)
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path / CALIBRATION_FILE} cannot be read ({error}): the model folder is damaged; "
            f"save the model again."
        ) from None


def _os_message(text: str) -> str:
    """The operating system's words in a safetensors error (``I/O error: File too large``)."""
    found = re.search(r'message: "([^"]+)"|I/O error: (.+?)(?: \(os error \d+\))?$', text)
    return next(g for g in found.groups() if g) if found else text


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


def build_module(config: ModelConfig) -> torch.nn.Module:
    """An untrained network of the architecture ``config`` describes (weights load after)."""
    if config.kind == "head":
        return ExpressionHead(
            int(config.in_features),
            len(config.genes),
            kind="linear" if config.head == "ridge" else config.head,
            hidden=int(config.hidden),
            dropout=config.dropout,
        )
    return ExpressionPredictor(
        len(config.genes),
        config.backbone,
        pretrained=False,
        dropout=config.dropout,
        img_size=config.patch_size,
        backbone_kwargs=config.backbone_kwargs or None,
        fields=len(config.scales),
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
