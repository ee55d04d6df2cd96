"""Running a training plan with Lightning's Trainer: one place for every stmix training run.

Early stopping, checkpoints, the progress bar, precision, accelerators, devices and strategies
(DDP) are the Trainer's; stmix adds only what Lightning does not do the way a notebook user
needs it: quiet by default, and Ctrl+C raises ``KeyboardInterrupt`` (Lightning calls
``sys.exit`` and leaves SIGINT ignored, which would end a Jupyter cell with ``SystemExit`` and
make the kernel deaf to the next interrupt).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stmix import _options
from stmix._terminate import Terminated
from stmix.errors import InputTypeError
from stmix.tl._plan import TrainingPlan
from stmix.tl._progress import EpochProgressBar
from stmix.tl._quiet import quiet

logger = logging.getLogger(__name__)

#: Trainer arguments that stmix sets from its own parameters.
OWNED = {
    "max_epochs": "epochs",
    "enable_progress_bar": "progress",
    "enable_checkpointing": "checkpoint_dir",
    "default_root_dir": "checkpoint_dir",
    "use_distributed_sampler": None,
    "accelerator": "accelerator",
    "devices": "devices",
}
CHECKPOINT = "last.ckpt"


def check_trainer_kwargs(kwargs: dict[str, Any], settings: tuple[str, ...] = ()) -> dict[str, Any]:
    """The extra keyword arguments of a training function, checked against ``Trainer``'s.

    ``settings`` are names that belong in ``plan_kwargs``; passing one here is a mistake that
    gets its own message.
    """
    known = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    for key in kwargs:
        if key in settings:
            raise InputTypeError(
                f"`{key}` is a training setting: pass it as plan_kwargs={{{key!r}: ...}}."
            )
        if key in OWNED:
            instead = OWNED[key]
            hint = f"use stmix's `{instead}=`" if instead else "stmix sets it itself"
            raise InputTypeError(f"`{key}` cannot be passed to the Trainer here: {hint}.")
        if key not in known:
            raise InputTypeError(
                f"Unexpected keyword argument {key!r}: it is neither a parameter of this function "
                f"nor of lightning.pytorch.Trainer."
            )
    return dict(kwargs)


#: Trainer arguments that decide the hardware, checked together before any work.
HARDWARE = ("strategy", "precision", "num_nodes")


def check_hardware(
    accelerator: str = "auto", devices: int | str | list[int] = "auto", **trainer_kwargs: Any
) -> None:
    """Refuse hardware this machine does not have, before any data is read or trained.

    :func:`~stmix.tl.fit` and :func:`~stmix.tl.complete` call it first; call it yourself before
    long preparation (cutting the patches of a large slide) that a GPU this machine lacks would
    waste. Builds a throwaway Trainer with the run's ``accelerator``, ``devices``, ``strategy``,
    ``precision`` and ``num_nodes`` (cheap: nothing starts before ``fit``), so that Lightning's
    own checks fail now.

    Parameters
    ----------
    accelerator, devices
        As for :func:`~stmix.tl.fit`.
    **trainer_kwargs
        Other Trainer arguments of the run; ``strategy``, ``precision`` and ``num_nodes`` are
        checked, the rest ignored.

    Raises
    ------
    ValueError
        When Lightning refuses the combination, with its reason and, when no CUDA GPU is
        found, the accelerator to use instead.

    Examples
    --------
    >>> stmix.tl.check_hardware("cpu", 2, strategy="ddp_spawn")  # doctest: +SKIP
    """
    chosen = {k: trainer_kwargs[k] for k in HARDWARE if k in trainer_kwargs}
    with quiet():
        trainer(
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **chosen,
        )


def trainer(**kwargs: Any) -> L.Trainer:
    """``lightning.pytorch.Trainer(**kwargs)``, its configuration errors as one ``ValueError``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        accelerator, devices = kwargs.get("accelerator"), kwargs.get("devices")
        said = " ".join(str(error).split())  # Lightning's message, on one line
        hint = ""
        if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
            hint = (
                f" torch {torch.__version__} finds no CUDA GPU on this machine: pass "
                f"{_options.arg('accelerator', 'cpu')}, or {_options.arg('accelerator', 'auto')} "
                f"for a GPU when there is one."
            )
        raise ValueError(
            f"The Trainer cannot run with {_options.arg('accelerator', accelerator)}, "
            f"{_options.arg('devices', devices)}"
            f"{''.join(f', {k}={kwargs[k]!r}' for k in HARDWARE if k in kwargs)}: {said}{hint}"
        ) from None


def default_precision(accelerator: str) -> str:
    """``bf16-mixed`` on a CUDA GPU that supports it, ``32-true`` elsewhere."""
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


def check_checkpoint(ckpt_path: str | os.PathLike | None, checkpoint_dir) -> str | None:
    """The checkpoint to resume from, checked before any work starts."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        if checkpoint_dir is None:
            raise ValueError("ckpt_path='last' needs `checkpoint_dir=`, the folder it lies in.")
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"Checkpoint {ckpt_path} does not exist; it is written as {CHECKPOINT} in the "
            f"`checkpoint_dir=` of an earlier run."
        )
    if not zipfile.is_zipfile(ckpt_path):  # torch.save writes a zip archive; nothing else loads
        raise ValueError(
            f"{ckpt_path} is not a training checkpoint (torch writes those as zip archives): "
            f"pass the {CHECKPOINT} that an earlier run wrote into its `checkpoint_dir=`."
        )
    return str(ckpt_path)


def run(
    plan: TrainingPlan,
    *,
    epochs: int,
    patience: int | None,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    checkpoint_dir: str | os.PathLike | None = None,
    ckpt_path: str | None = None,
    progress: bool = True,
    desc: str = "fit",
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train ``plan`` and leave its network with the best epoch's weights.

    Early stopping watches ``val_<monitor>`` with ``patience`` (when there is validation data);
    with ``checkpoint_dir``, ``last.ckpt`` there is rewritten at the end of every epoch, and
    ``ckpt_path`` resumes from such a file. Returns where and how the run went: ``accelerator``,
    ``devices``, ``strategy``, ``precision``, ``seconds``.
    """
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    if patience is not None and plan.n_val:
        callbacks.append(
            EarlyStopping(f"val_{plan.monitor}", patience=patience, mode="min", check_finite=False)
        )
    if checkpoint_dir is not None:
        callbacks.append(
            ModelCheckpoint(  # one file, rewritten at the end of every epoch
                dirpath=checkpoint_dir,
                filename=CHECKPOINT.removesuffix(".ckpt"),
                monitor=None,
                save_top_k=1,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        )
    if progress:
        callbacks.append(EpochProgressBar(desc))
    trainer_kwargs.setdefault("precision", default_precision(accelerator))
    trainer_kwargs.setdefault("logger", False)
    with quiet():
        lightning = trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=callbacks,
            enable_checkpointing=checkpoint_dir is not None,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=None if plan.n_val else 0,
            use_distributed_sampler=False,
            default_root_dir=checkpoint_dir,
            log_every_n_steps=1,
            **trainer_kwargs,
        )
    started = time.perf_counter()
    with quiet(), _interrupt_raises(lightning, checkpoint_dir), _foreign_checkpoint(ckpt_path):
        lightning.fit(plan, datamodule=plan.datamodule(), ckpt_path=ckpt_path)
    return {
        "accelerator": lightning.strategy.root_device.type,
        "devices": int(lightning.num_devices),
        "strategy": type(lightning.strategy).__name__,
        "precision": str(lightning.precision),
        "seconds": time.perf_counter() - started,
    }


@contextlib.contextmanager
def _foreign_checkpoint(ckpt_path: str | None) -> Iterator[None]:
    """Torch's refusal of a checkpoint holding arbitrary objects, without its advice.

    That advice, ``weights_only=False``, runs whatever code the file holds.
    """
    try:
        yield
    except pickle.UnpicklingError:
        if ckpt_path is None:
            raise
        raise ValueError(
            f"{ckpt_path} holds objects other than tensors and settings, so stmix did not write "
            f"it; it is not loaded. Resume from the {CHECKPOINT} of an earlier stmix run."
        ) from None


@contextlib.contextmanager
def _interrupt_raises(trainer: L.Trainer, checkpoint_dir) -> Iterator[None]:
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SIGTERMException:  # Lightning's own SIGTERM handler stopped the loop
        raise Terminated("Training stopped by SIGTERM; nothing was written.") from None
    except SystemExit as error:
        # Lightning turns Ctrl+C into sys.exit(1) inside its `except KeyboardInterrupt`; any
        # other exit (a callback's sys.exit) also leaves the trainer "interrupted", so the
        # KeyboardInterrupt it was raised from is what tells them apart
        if not (trainer.interrupted and isinstance(error.__context__, KeyboardInterrupt)):
            raise
        where = (
            f" The last completed epoch is saved in {Path(checkpoint_dir) / CHECKPOINT}; resume "
            f"with ckpt_path='last'."
            if checkpoint_dir is not None
            else " Pass `checkpoint_dir=` to be able to resume an interrupted run."
        )
        kind = Terminated if isinstance(error.__context__, Terminated) else KeyboardInterrupt
        raise kind(f"Training interrupted; nothing was written.{where}") from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
