"""gpubp: multilayer perceptrons trained by backpropagation with Numba kernels (CUDA and CPU)."""

from .backends import device_report
from .config import Config, InvalidParameter
from .network import Network, TrainingDiverged, check_gradients
from .schedule import Execution, Tuning
from .state import State
from .training import History
from .untrusted import BadFile

__all__ = [
    "Network",
    "Config",
    "State",
    "InvalidParameter",
    "History",
    "TrainingDiverged",
    "BadFile",
    "Execution",
    "Tuning",
    "check_gradients",
    "device_report",
]
__version__ = "0.1.0"
