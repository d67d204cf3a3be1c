"""The small CIFAR ResNet-20 (He et al. 2016): 16/32/64 channels, 3 BasicBlocks per stage.

Downsampling blocks use a 1x1 conv + BN shortcut (option B). The last layer is named ``linear``
as in the reference code.
"""
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from models import Normalize, register_model


def _stage(inplanes, planes, stride, blocks=3):
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet20s(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, mean=None, std=None):
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(16, 16, 1)
        self.layer2 = _stage(16, 32, 2)
        self.layer3 = _stage(32, 64, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))


@register_model
def resnet20s(num_classes=10, in_channels=3, image_size=32, mean=None, std=None, imagenet_arch=False):
    """ResNet-20 for small images (``image_size`` and ``imagenet_arch`` are not used)."""
    return ResNet20s(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
