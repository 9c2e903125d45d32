"""The model registry: shapes, parameter counts, normalisation, randomised models."""
from __future__ import annotations

import pytest
import torch

from distadv.models import (MODELS, NOMINAL_PARAMS, GaussianInput, Normalize, PNIConv2d,
                            create_model)

# Forward passes on real tensors for the models that are cheap on a 2-core CPU; the big
# WideResNets are built on the meta device (shapes and counts without memory or compute).
REAL = {"basicnet", "smallcnn", "resnet20", "noisenet20", "preact_resnet18", "vgg11", "resnet",
        "lwta_resnet20"}


@pytest.mark.parametrize("name", MODELS.names())
def test_param_count_within_5_percent(name):
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / NOMINAL_PARAMS[name] - 1) < 0.05, (name, n)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("classes", [10, 100])
def test_output_shape(name, classes):
    device = "cpu" if name in REAL else "meta"
    with torch.device(device):
        model = create_model(name, num_classes=classes).eval()
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, classes)


def test_every_model_normalises_first():
    for name in MODELS.names():
        with torch.device("meta"):
            model = create_model(name, mean=[0.5] * 3, std=[0.2] * 3)
        first = next(m for m in model.modules() if not list(m.children()) or isinstance(m, Normalize))
        assert isinstance(first, Normalize), name


def test_normalize_matches_manual():
    model = create_model("basicnet", mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    x = torch.rand(3, 3, 32, 32)
    manual = model.net((x - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
                       / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
    assert torch.allclose(model(x), manual)


def test_wider_preact_is_about_17m():
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model("preact_resnet18", width=1.25).parameters())
    assert 16.5e6 < n < 18e6


def test_input_noise_only_at_inference():
    torch.manual_seed(0)
    model = create_model("basicnet", input_noise=0.1)
    assert isinstance(model, GaussianInput)
    x = torch.rand(4, 3, 32, 32)
    model.train()
    assert torch.equal(model(x), model(x))
    model.eval()
    assert not torch.equal(model(x), model(x))


def test_noisenet_has_trainable_noise_in_every_conv():
    model = create_model("noisenet20")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(c, PNIConv2d) for c in convs)
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(model(x), model(x))  # noise at inference too
    model(x).sum().backward()
    assert all(c.noise_scale.grad is not None and c.noise_scale.grad != 0 for c in convs)


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="valid: basicnet"):
        create_model("resnet999")
