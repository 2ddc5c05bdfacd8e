"""How to train: the recipe (:class:`TrainConfig`) and the network it describes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from noisefind.base.errors import NoisefindError
from noisefind.models.architectures import build_model
from noisefind.models.nets import Net
from noisefind.training.fast_recipe import FAST, OWN_BACKBONE

if TYPE_CHECKING:
    from noisefind.data.labeled import LabeledData

RECIPES = ("paper", "fast")  # how to train (noisefind.training.fast_recipe has the second)
BACKBONE_LR = 0.01  # fine-tuning a pretrained backbone: a tenth of training from scratch


@dataclass
class TrainConfig:
    """How to train. Defaults follow the paper's recipe and fit every label, wrong ones included.

    ``batch_size=None`` picks min(512, N // 8) (at least 32), so small data sets still get enough
    steps per epoch. The learning rate warms up linearly over the first ``warmup`` share of steps
    to ``lr``, then decays linearly to zero, which lets the last epochs memorise the stragglers.

    ``holdout > 0`` trains on all but a seeded, stratified ``holdout`` share of the examples
    (:func:`noisefind.data.labeled.split_holdout` with ``seed``), which become the test set; a data
    set
    with a test split of its own keeps it instead. The share is saved with the run, so
    :func:`noisefind.analyses.evaluate.run_data` rebuilds the same split from the same data.

    ``augment`` trains on randomly shifted views of images (by up to an eighth of the side,
    reflect-padded), horizontally flipped too for colour images, as out-of-sample models
    should be trained; it does nothing for tables. The scanned model trains without it, so
    that it fits every given label as the method requires (:func:`augment_for`).

    ``recipe="fast"`` trains as the out-of-sample models do on images
    (:mod:`noisefind.training.fast_recipe`): ``lr`` and ``weight_decay`` are then per 1,024
    examples in the decoupled form, with a triangular schedule (``warmup`` unused) and a
    lookahead average of the weights. ``label_smoothing`` applies to either recipe.
    ``fold_recipe`` is how the out-of-sample models train and ``fold_epochs`` how long (None:
    the fast recipe's own count, the paper recipe the scanned model's ``epochs``;
    :func:`noisefind.signals.out_of_sample.out_of_sample_config`). ``fold_models`` is how many
    models each fold trains, seeded apart, their held-out probabilities averaged (more
    accurate fold models for that many times their training; docs/benchmarks.md).
    """

    arch: str = "auto"
    width: float = 1.0
    epochs: int = 50
    batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.2
    seed: int = 0
    device: str = "auto"
    dropout: str = "none"
    p_gen: float = 0.2
    p_mem: float = 0.1
    holdout: float = 0.0
    checkpoint_every: int = 0
    augment: bool = False
    backbone: str | None = None
    backbone_weights: str | None = None
    probe_epochs: int | None = None
    recipe: str = "paper"
    label_smoothing: float = 0.0
    fold_recipe: str = "fast"
    fold_epochs: int | None = None
    fold_models: int = 1

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config a run recorded (``run.config["train"]``); fields of earlier releases that
        no longer steer training (``track_gradients``, ``extra``) are left out."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def validate(self) -> None:
        """Refuse a recipe that cannot train, naming the setting (as its parameter)."""
        if self.epochs < 1:
            raise NoisefindError(f"epochs must be at least 1, got {self.epochs}",
                                 parameter="epochs")
        if self.batch_size is not None and self.batch_size < 2:
            raise NoisefindError(f"batch_size must be at least 2 (BatchNorm needs it), got "
                                 f"{self.batch_size}", parameter="batch_size")
        if not self.lr > 0:
            raise NoisefindError(f"lr must be positive, got {self.lr}", parameter="lr")
        if not self.width > 0:
            raise NoisefindError(f"width must be positive, got {self.width}", parameter="width")
        if not 0.0 <= self.holdout < 1.0:
            raise NoisefindError(f"holdout must be in [0, 1), got {self.holdout}",
                                 parameter="holdout")
        if self.backbone is not None:
            if ":" not in self.backbone:
                raise NoisefindError(f"backbone {self.backbone!r}: give torchvision:<name> or "
                                     "<module>:<function>", parameter="backbone")
            if self.backbone == OWN_BACKBONE and self.backbone_weights is None:
                raise NoisefindError(f"backbone {OWN_BACKBONE}: give the weights to start from",
                                     parameter=("backbone_weights", "backbone"))
            if self.dropout != "none":
                raise NoisefindError("dropout: only noisefind's own networks take a dropout "
                                     "variant, not a backbone", parameter=("dropout", "backbone"))
            if self.probe_epochs is not None and not 0 <= self.probe_epochs <= self.epochs:
                raise NoisefindError(f"probe_epochs must lie in 0..epochs ({self.epochs}), got "
                                     f"{self.probe_epochs}", parameter="probe_epochs")
        elif self.backbone_weights is not None:
            raise NoisefindError("backbone_weights: give the backbone they are for",
                                 parameter=("backbone_weights", "backbone"))
        for name in ("recipe", "fold_recipe"):
            if getattr(self, name) not in RECIPES:
                raise NoisefindError(f"{name} {getattr(self, name)!r}: choose one of "
                                     f"{', '.join(RECIPES)}", parameter=name)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise NoisefindError(f"label_smoothing must be in [0, 1), got "
                                 f"{self.label_smoothing}", parameter="label_smoothing")
        if self.fold_epochs is not None and self.fold_epochs < 1:
            raise NoisefindError(f"fold_epochs must be at least 1, got {self.fold_epochs}",
                                 parameter="fold_epochs")
        if self.fold_models < 1:
            raise NoisefindError(f"fold_models must be at least 1, got {self.fold_models}",
                                 parameter="fold_models")
        if self.checkpoint_every < 0:
            raise NoisefindError(f"checkpoint_every must be 0 or more, got "
                                 f"{self.checkpoint_every}", parameter="checkpoint_every")

    def linear_probe_epochs(self) -> int:
        """Epochs that train a backbone's classifier alone (0 without a backbone, and for
        noisefind's own network, which the fast recipe trains whole from the start)."""
        if self.backbone in (None, OWN_BACKBONE):
            return 0
        return self.epochs // 3 if self.probe_epochs is None else self.probe_epochs

    def resolved_batch_size(self, n: int) -> int:
        """``batch_size``, or min(512, N // 8) but at least 32 when it is None."""
        return self.batch_size or int(min(512, max(32, n // 8)))


def make_model(config: TrainConfig, data_shape: tuple[int, ...], num_classes: int) -> Net:
    """The network ``config`` describes, with its dropout variant; for a backbone, its
    architecture wrapped for the flip search (:class:`~noisefind.models.own.OwnModel`), with
    no weights loaded yet (:func:`noisefind.training.fit.fit` loads them). The backbone
    ``noisefind:fast`` is the fast recipe's own network, at its width."""
    if config.backbone == OWN_BACKBONE:
        return build_model("whitened", data_shape, num_classes, FAST["width"])
    if config.backbone is not None:
        import torch

        from noisefind.models.own import OwnModel, build_module

        module = build_module(config.backbone, num_classes)
        return OwnModel(module, torch.zeros((2, *data_shape)), num_classes=num_classes,
                        name=config.backbone)
    from noisefind.models.dropout import dropout_factory

    factory = dropout_factory(config.dropout, config.p_gen, config.p_mem, config.seed)
    return build_model(config.arch, data_shape, num_classes, config.width, factory)


def starting_model(config: TrainConfig, data: LabeledData) -> Net:
    """What training on ``data`` starts from: :func:`make_model`'s network, its input
    standardisation fitted to ``data``, and the backbone's pretrained weights loaded (all but
    the classifier, which stays new) when ``config`` gives them."""
    from noisefind.models.own import load_backbone

    model = make_model(config, data.input_shape, data.num_classes)
    model.fit_normalization(data.x)
    if config.backbone_weights is not None:
        load_backbone(model, config.backbone_weights, config.backbone)
    return model
