"""The model zoo, and how a model config node becomes a `torch.nn.Module`.

    spec = model_spec(cfg)        # the resolved `model` node as a plain dict (JSON-safe)
    model = build_model(spec)     # hydra.utils.instantiate: `_target_` plus its own kwargs

The driver resolves the `model` node once, against a config whose `dataset` node holds the
values read from the loaded data (`sim.data.spec.with_data`), so `${dataset.num_classes}`
and friends are the data's. The same dict reaches every client in its `ClientSettings`
(`sim.federation.client_settings`), so the driver's initial model, the server's evaluator and
every client build the model from one resolved config. Any importable `nn.Module` works:
`model=custom model._target_=pkg.Net +model.width=64 +model.classes='${dataset.num_classes}'`.

Zoo: `sim.models.cnn.Net` (Flower quickstart CNN, `model=cnn`), `sim.models.resnet.ResNet18`
(GroupNorm, CIFAR stem, `model=resnet18`), `sim.models.cnn28.CNN28` (`model=cnn28`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

__all__ = ["build_model", "model_spec"]


def model_spec(cfg: DictConfig) -> dict[str, Any]:
    """The `model` node of `cfg` with every interpolation resolved, as a plain dict."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(spec, dict)
    return spec


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Instantiate `spec` (`_target_` plus keyword arguments); fail unless it is an `nn.Module`."""
    from hydra.utils import instantiate

    model = instantiate(spec)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model._target_={spec.get('_target_')} built a {type(model).__name__}, not a torch.nn.Module")
    return model
