"""noisefind: find mislabeled training examples by how few neurons flip them."""

from noisefind.data import LabeledData, NoiseSpec, load_data
from noisefind.errors import NoisefindError
from noisefind.flip import FlipSettings
from noisefind.library import LabelIssues, find_label_issues
from noisefind.scan import scan
from noisefind.train import Run, TrainConfig, fit, load_run

__version__ = "0.1.0"

train = fit

__all__ = ["FlipSettings", "LabeledData", "NoiseSpec", "NoisefindError", "Run", "TrainConfig",
           "fit", "load_data", "load_run", "scan", "train"]
__all__ += ["LabelIssues", "find_label_issues"]
