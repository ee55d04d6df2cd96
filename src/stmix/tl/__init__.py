"""Tools: training, prediction and scoring. The only place where AnnData meets tensors."""

from stmix._model_config import ModelConfig
from stmix._presets import PRESETS, TrainingConfig
from stmix.tl._baseline import training_mean
from stmix.tl._compare import compare
from stmix.tl._complete import complete
from stmix.tl._embed import embed
from stmix.tl._evaluate import evaluate
from stmix.tl._fit import DEFAULT_BACKBONE, fit
from stmix.tl._impute import impute, predict, predictions
from stmix.tl._model import Imputer, load
from stmix.tl._slides import predict_slides
from stmix.tl._trainer import check_hardware

__all__ = [
    "DEFAULT_BACKBONE",
    "PRESETS",
    "Imputer",
    "ModelConfig",
    "TrainingConfig",
    "check_hardware",
    "compare",
    "complete",
    "embed",
    "evaluate",
    "fit",
    "impute",
    "load",
    "predict",
    "predict_slides",
    "predictions",
    "training_mean",
]
