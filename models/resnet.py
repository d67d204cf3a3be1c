"""ResNet-18/50 on torchvision's ResNet, with a CIFAR stem (3x3 conv, no max-pool) by default.

State_dict keys are exactly torchvision's plus ``normalize.mean`` and ``normalize.std``, so the
reference checkpoints load with ``strict=True``.
"""
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models import Normalize, register_model


class NormalizedResNet(ResNet):
    """torchvision ResNet with input normalization and a stem chosen for the image size."""

    def __init__(self, block, layers, *, num_classes=10, in_channels=3, mean=None, std=None,
                 imagenet_arch=False):
        super().__init__(block, layers, num_classes=num_classes)
        self.normalize = Normalize(mean, std, in_channels)
        if imagenet_arch:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self._forward_impl(self.normalize(x))


@register_model
def resnet18(num_classes=10, in_channels=3, image_size=32, mean=None, std=None, imagenet_arch=False):
    """ResNet-18 (BasicBlock [2, 2, 2, 2])."""
    return NormalizedResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels,
                            mean=mean, std=std, imagenet_arch=imagenet_arch)


@register_model
def resnet50(num_classes=10, in_channels=3, image_size=32, mean=None, std=None, imagenet_arch=False):
    """ResNet-50 (Bottleneck [3, 4, 6, 3])."""
    return NormalizedResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels,
                            mean=mean, std=std, imagenet_arch=imagenet_arch)
