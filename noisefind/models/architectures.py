"""Which network a data set gets: the architectures by name, and the ``auto`` rule."""

from __future__ import annotations

from noisefind.base.errors import NoisefindError
from noisefind.models.nets import DropoutFactory, Net, mlp, resnet9, small_cnn
from noisefind.models.whitened import whitened_cnn

ARCHS = ("auto", "resnet9", "whitened", "cnn", "mlp")
BUILDERS = {"resnet9": resnet9, "cnn": small_cnn}


def choose_arch(input_shape: tuple[int, ...]) -> str:
    """``auto``: MLP for feature vectors, the small CNN below 32 pixels, else ResNet-9."""
    if len(input_shape) == 1:
        return "mlp"
    return "cnn" if min(input_shape[1:]) < 32 else "resnet9"


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0,
                dropout: DropoutFactory | None = None) -> Net:
    """Build an untrained network for inputs of ``input_shape`` (without the batch dimension)."""
    if arch not in ARCHS:
        raise NoisefindError(f"arch {arch!r}: choose one of {', '.join(ARCHS)}", parameter="arch")
    if width <= 0:
        raise NoisefindError(f"width must be positive, got {width}", parameter="width")
    arch = choose_arch(input_shape) if arch == "auto" else arch
    if arch == "mlp":
        if len(input_shape) != 1:
            raise NoisefindError("arch mlp needs tabular data (feature vectors)", parameter="arch")
        return mlp(input_shape[0], num_classes, width, dropout)
    if len(input_shape) != 3:
        raise NoisefindError(f"arch {arch} needs image data; this data is tabular",
                             parameter="arch")
    if arch == "whitened":
        return whitened_cnn(input_shape[0], num_classes, width, dropout,
                            image_side=tuple(input_shape[1:]))
    return BUILDERS[arch](input_shape[0], num_classes, width, dropout)
