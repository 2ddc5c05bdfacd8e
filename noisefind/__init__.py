"""noisefind: find mislabeled training examples by how few neurons flip them."""

from noisefind.api import LabelIssues, find_label_issues
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, NoiseSpec
from noisefind.data.load import load_data
from noisefind.scanning.pipeline import scan
from noisefind.signals.flip import FlipSettings
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import Run, load_run

__version__ = "0.1.0"

train = fit

__all__ = ["FlipSettings", "LabeledData", "NoiseSpec", "NoisefindError", "Run", "TrainConfig",
           "fit", "load_data", "load_run", "scan", "train"]
__all__ += ["LabelIssues", "find_label_issues"]
