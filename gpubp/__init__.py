"""gpubp: multilayer perceptrons trained by backpropagation with Numba kernels (CUDA and CPU)."""

from .backends import device_report
from .network import History, Network, TrainingDiverged, check_gradients
from .schedule import Execution, Tuning
from .untrusted import BadFile

__all__ = [
    "Network",
    "History",
    "TrainingDiverged",
    "BadFile",
    "Execution",
    "Tuning",
    "check_gradients",
    "device_report",
]
__version__ = "0.1.0"
