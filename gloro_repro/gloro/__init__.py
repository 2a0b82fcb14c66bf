"""Plain-PyTorch GloRo core: Lipschitz-tracked layers, GloroNet, bounds, losses, schedules, attacks.

No Lightning, DVC or W&B here, so the core drops into any training loop.
"""
from .activations import MinMax, make_activation
from .architectures import ARCHITECTURES, build_network, parse_spec
from .attacks import pgd_l2
from .bounds import SoundBound, exact_spectral_norm
from .chain import UnboundableNetworkError, network_chain
from .layers import LipschitzConv2d, LipschitzDense, LipschitzLinear, LipschitzResidualConv2d, tracked_layers
from .losses import (
    LOSSES,
    RobustBatch,
    StepLoss,
    emma_loss,
    gloro_cross_entropy,
    register_loss,
    step_loss,
    trades_loss,
)
from .lower_bounds import global_lower_bound, local_lower_bound
from .model import Certificate, GloroNet, StaleIteratesError, certify_logits, clean_accuracy, rejection_rate, vra
from .precision import ReducedPrecisionError, float32_precision, ieee_arithmetic
from .schedules import EpsSchedule, LambdaSchedule, LRSchedule, TrainingSchedule

__all__ = [
    "ARCHITECTURES", "Certificate", "EpsSchedule", "GloroNet", "LOSSES", "LRSchedule", "LambdaSchedule",
    "LipschitzConv2d", "LipschitzDense", "LipschitzLinear", "LipschitzResidualConv2d", "MinMax",
    "ReducedPrecisionError", "RobustBatch", "SoundBound", "StaleIteratesError", "StepLoss", "TrainingSchedule",
    "UnboundableNetworkError", "build_network", "certify_logits", "clean_accuracy", "emma_loss",
    "exact_spectral_norm", "float32_precision", "global_lower_bound", "gloro_cross_entropy", "ieee_arithmetic",
    "local_lower_bound", "make_activation", "network_chain", "parse_spec", "pgd_l2", "register_loss",
    "rejection_rate", "step_loss", "tracked_layers", "trades_loss", "vra",
]
