"""Model registry: ``name -> constructor``; every model normalizes its input itself.

Inputs are float tensors in [0, 1], NCHW. Each model owns a :class:`Normalize` module as
``self.normalize`` (state_dict keys ``normalize.mean`` and ``normalize.std``) and applies it first.
"""
import torch
from torch import nn

from utils import UserError

MODELS = {}


def register_model(fn):
    """Register a model constructor under its function name."""
    MODELS[fn.__name__] = fn
    return fn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; mean and std default to 0.5 for each of ``channels``."""

    def __init__(self, mean=None, std=None, channels=3):
        super().__init__()
        mean = [0.5] * channels if mean is None else mean
        std = [0.5] * channels if std is None else std
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != channels or std.numel() != channels:
            raise UserError(f"mean and std need {channels} values (one per input channel), "
                            f"got {mean.numel()} and {std.numel()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


def build_model(name, *, num_classes, in_channels=3, image_size=32, mean=None, std=None,
                imagenet_arch=False):
    """Build the registered model ``name``; an unknown name is a UserError listing the choices."""
    if name not in MODELS:
        raise UserError(f"unknown arch {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        mean=mean, std=std, imagenet_arch=imagenet_arch)


# Importing the submodules registers their models.
from models import resnet, resnet20s, vgg  # noqa: E402

__all__ = ["MODELS", "Normalize", "build_model", "register_model", "resnet", "resnet20s", "vgg"]
