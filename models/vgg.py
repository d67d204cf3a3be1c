"""VGG-16 with batch norm for small images: ``features``, global average pool, ``classifier``.

A max-pool that would shrink the feature map below 1x1 becomes ``nn.Identity`` (8x8 inputs keep 3
pools, 32x32 keep all 5); layer indices in ``features`` stay those of torchvision's ``vgg16_bn``.
"""
from torch import nn

from models import Normalize, register_model

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_features(cfg, in_channels, image_size):
    layers, size = [], image_size
    for v in cfg:
        if v == "M":
            if size // 2 >= 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            else:
                layers.append(nn.Identity())
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v),
                       nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, cfg, num_classes=10, in_channels=3, image_size=32, mean=None, std=None):
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.features = make_features(cfg, in_channels, image_size)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[-2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.features(self.normalize(x)))
        return self.classifier(x.flatten(1))


@register_model
def vgg16_bn(num_classes=10, in_channels=3, image_size=32, mean=None, std=None, imagenet_arch=False):
    """VGG-16 with batch norm (``imagenet_arch`` is not used)."""
    return VGG(CFG16, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
               mean=mean, std=std)
