"""Tests for the model registry: shapes, normalization buffers, reference keys, determinism."""
import pytest
import torch
import torchvision

from models import MODELS, build_model
from utils import UserError

ARCHS = sorted(MODELS)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_output_shape(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size)
    x = torch.rand(2, channels, size, size)
    assert model(x).shape == (2, 7)  # train mode
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", ARCHS)
def test_normalize_buffers(name):
    mean, std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    sd = build_model(name, num_classes=10, mean=mean, std=std).state_dict()
    assert torch.allclose(sd["normalize.mean"], torch.tensor(mean))
    assert torch.allclose(sd["normalize.std"], torch.tensor(std))
    sd = build_model(name, num_classes=10, in_channels=1, image_size=8).state_dict()
    assert sd["normalize.mean"].tolist() == [0.5] and sd["normalize.std"].tolist() == [0.5]


@pytest.mark.parametrize("name", ARCHS)
def test_normalize_is_applied(name):
    model = build_model(name, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.normalize.mean.fill_(0.0)
        after = model(x)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ARCHS)
def test_same_seed_same_weights(name):
    torch.manual_seed(3)
    a = build_model(name, num_classes=10).state_dict()
    torch.manual_seed(3)
    b = build_model(name, num_classes=10).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_arch_lists_choices():
    with pytest.raises(UserError) as err:
        build_model("foo", num_classes=10)
    msg = str(err.value)
    assert "'foo'" in msg and ", ".join(sorted(MODELS)) in msg and "\n" not in msg


def test_resnet18_loads_reference_checkpoint():
    ref = torchvision.models.resnet18(num_classes=10).state_dict()
    model = build_model("resnet18", num_classes=10)
    assert set(model.state_dict()) == set(ref) | {"normalize.mean", "normalize.std"}
    ref["conv1.weight"] = torch.randn(64, 3, 3, 3)
    ref["normalize.mean"] = torch.tensor([0.4914, 0.4822, 0.4465])
    ref["normalize.std"] = torch.tensor([0.2470, 0.2435, 0.2616])
    checkpoint = {"state_dict": ref}
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    assert torch.equal(model.conv1.weight, ref["conv1.weight"])
    assert torch.equal(model.normalize.mean, ref["normalize.mean"])


def test_resnet_imagenet_stem():
    model = build_model("resnet50", num_classes=5, in_channels=1, imagenet_arch=True).eval()
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 5)


def test_vgg_keeps_pools_that_fit():
    def pools(size):
        model = build_model("vgg16_bn", num_classes=10, image_size=size)
        return sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features)

    assert pools(8) == 3 and pools(32) == 5
