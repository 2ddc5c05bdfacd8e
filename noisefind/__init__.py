"""noisefind: find mislabeled training examples by how few neurons flip them.

The pipeline's stages are sub-packages: ``data`` -> ``models`` / ``training`` -> ``signals`` ->
``decide`` -> ``scanning`` (files); ``bench`` and ``analyses`` sit beside the scan. The public
names below are the library; ``noisefind.cli`` is the command line.
"""

from noisefind.api import LabelIssues, ScanResult, find_label_issues, rank_label_issues, scan
from noisefind.base.errors import NoisefindError
from noisefind.data.labeled import LabeledData, NoiseSpec
from noisefind.data.load import load_data
from noisefind.signals.flip import FlipSettings
from noisefind.training.config import TrainConfig
from noisefind.training.fit import fit
from noisefind.training.runs import Run, load_run

__version__ = "0.1.0"

train = fit  # noisefind.train(data, config): no module of that name to hide

__all__ = ["FlipSettings", "LabelIssues", "LabeledData", "NoiseSpec", "NoisefindError", "Run",
           "ScanResult", "TrainConfig", "find_label_issues", "fit", "load_data", "load_run",
           "rank_label_issues", "scan", "train"]
