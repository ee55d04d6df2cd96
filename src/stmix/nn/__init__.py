"""Pure PyTorch: partner samplers, image mixing, the SNR-ST-Mix loss, metrics.

Nothing here imports AnnData, so the mixer and the loss drop into any PyTorch training code.
"""

from stmix.nn.augment import METHODS, MIXING, Augmentation, Mix, Plain, Step
from stmix.nn.completion import NeighbourhoodTransformer
from stmix.nn.geometric import flip_rotate_crop
from stmix.nn.images import to_float
from stmix.nn.loss import LOSS_WEIGHTS, mse_loss, pearson_loss, snr_loss
from stmix.nn.metrics import gene_metrics, summary
from stmix.nn.mixing import cutmix, mix_pixels, sample_lambda
from stmix.nn.model import ExpressionPredictor
from stmix.nn.sampling import CandidateSampler, DenseSampler, PartnerSampler, UniformSampler

__all__ = [
    "LOSS_WEIGHTS",
    "METHODS",
    "MIXING",
    "Augmentation",
    "CandidateSampler",
    "DenseSampler",
    "ExpressionPredictor",
    "Mix",
    "NeighbourhoodTransformer",
    "PartnerSampler",
    "Plain",
    "Step",
    "UniformSampler",
    "cutmix",
    "flip_rotate_crop",
    "gene_metrics",
    "mix_pixels",
    "mse_loss",
    "pearson_loss",
    "sample_lambda",
    "snr_loss",
    "summary",
    "to_float",
]
