"""torchvision ResNets with one-output heads, and MDV temporal pooling heads.

``build_model(model, arch, weights)``:

* ``model='single'``: ResNet over one image -> one output (a regression
  value or a binary logit);
* ``model='mdv:POOL'``: the same backbone, shared, over every image of a
  video's MDV stack (padded, with a mask), then temporal pooling
  ``avg | max | rank | lstm | attention`` over the per-image features and a
  linear head.

``weights``: ``'none'`` (random init), ``'imagenet'`` (torchvision's ImageNet
weights, read from the local torch hub cache only; a missing file is an
error that says how to get it, never a silent fallback to random weights),
or the path of a state_dict (a torchvision ResNet state_dict, or one of our
checkpoints).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from ahdi.pipeline.errors import AhdiError, SettingError

from .vocab import ARCHS, POOLINGS, check_choice, parse_model

_WEIGHTS_ENUM = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                 "resnet50": "ResNet50_Weights"}


class WeightsNotFoundError(AhdiError, FileNotFoundError):
    """ImageNet weights requested but not in the local torch cache."""


def imagenet_weights_file(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` in the local cache."""
    enum = getattr(torchvision.models, _WEIGHTS_ENUM[arch])
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"weights file not found: {path}")
    try:
        # weights_only: a weights file from elsewhere must not run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise SettingError(f"{path} is not a weights file: torch cannot read it "
                           f"({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        # one of our checkpoints: keep the backbone part
        state = {k[len("backbone."):]: v for k, v in state["model"].items()
                 if k.startswith("backbone.")}
    if not isinstance(state, dict):
        raise SettingError(f"{path} does not hold a state_dict")
    return state


def build_backbone(arch: str = "resnet18", weights: str = "none") -> tuple[nn.Module, int]:
    """ResNet ``arch`` without its classifier (``fc`` = Identity), and its feature size."""
    check_choice("arch", arch, ARCHS)
    net = getattr(torchvision.models, arch)(weights=None)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    if weights in (None, "none"):
        return net, feat_dim
    if weights == "imagenet":
        path = imagenet_weights_file(arch)
        if not path.is_file():
            url = getattr(torchvision.models, _WEIGHTS_ENUM[arch]).IMAGENET1K_V1.url
            raise WeightsNotFoundError(
                f"ImageNet weights for {arch} are not in the local torch cache ({path}). "
                f"On a machine with internet run: python -c \"import torchvision; "
                f"torchvision.models.{arch}(weights='IMAGENET1K_V1')\" (or download {url}) "
                f"and copy the file to {path}; or pass --weights none to train from scratch, "
                f"or --weights PATH to a state_dict file.")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = _load_state(str(weights))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SettingError(f"weights {weights!r} do not fit {arch}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return net, feat_dim


def arp_weights(counts: torch.Tensor, m_max: int) -> torch.Tensor:
    """(B, m_max) approximate rank pooling coefficients, zero past each count.

    alpha_tau(M) = 2 (M - tau + 1) - (M + 1) (H_M - H_{tau-1}), tau = 1..M,
    with H the harmonic numbers; divided by sum |alpha| so that the pooled
    feature's scale does not grow with M (M = 1 gives all zeros).
    """
    dev = counts.device
    tau = torch.arange(1, m_max + 1, device=dev, dtype=torch.float64)
    harm = torch.cat([torch.zeros(1, device=dev, dtype=torch.float64),
                      torch.cumsum(1.0 / tau, 0)])               # H_0 .. H_m_max
    m = counts.to(torch.float64).unsqueeze(1)                     # (B, 1)
    h_m = harm[counts.long()].unsqueeze(1)                       # (B, 1)
    h_prev = harm[:-1].unsqueeze(0)                               # H_{tau-1}, (1, m_max)
    alpha = 2 * (m - tau + 1) - (m + 1) * (h_m - h_prev)
    alpha = torch.where(tau.unsqueeze(0) <= m, alpha, torch.zeros_like(alpha))
    norm = alpha.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return (alpha / norm).to(torch.float32)


class SingleImageNet(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feat_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 3, H, W) -> (B,)
        return self.head(self.backbone(x)).squeeze(1)


class MDVNet(nn.Module):
    """Shared backbone over each MDV image, masked temporal pooling, linear head."""

    def __init__(self, backbone: nn.Module, feat_dim: int, pooling: str, hidden: int = 256):
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        self.backbone = backbone
        self.pooling = pooling
        self.channels_last = False     # set by the engine on CUDA
        out_dim = feat_dim
        if pooling == "lstm":
            self.lstm = nn.LSTM(feat_dim, hidden, batch_first=True)
            out_dim = hidden
        elif pooling == "attention":
            self.att_w1 = nn.Linear(feat_dim, hidden)
            self.att_w2 = nn.Linear(hidden, 1)
        self.head = nn.Linear(out_dim, 1)

    def features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, M, 3, H, W), (B, M) bool -> (B, M, D), zeros where masked."""
        b, m = mask.shape
        inp = x[mask]                                             # only real images
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        valid = self.backbone(inp)
        feats = valid.new_zeros(b, m, valid.shape[1])
        feats[mask] = valid
        return feats

    def pool(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        counts = mask.sum(1)
        maskf = mask.unsqueeze(2).to(feats.dtype)
        if self.pooling == "avg":
            return (feats * maskf).sum(1) / counts.clamp_min(1).unsqueeze(1).to(feats.dtype)
        if self.pooling == "max":
            return feats.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(1)
        if self.pooling == "rank":
            w = arp_weights(counts, mask.shape[1]).to(feats.dtype)
            return (feats * w.unsqueeze(2)).sum(1)
        if self.pooling == "lstm":
            packed = nn.utils.rnn.pack_padded_sequence(
                feats, counts.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return h[-1]
        # attention: a_t = W2 tanh(W1 F_t + b1) + b2, softmax over valid t
        a = self.att_w2(torch.tanh(self.att_w1(feats))).squeeze(2)
        a = a.masked_fill(~mask, float("-inf"))
        w = torch.softmax(a.float(), dim=1).to(feats.dtype)
        return (feats * w.unsqueeze(2)).sum(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x, mask), mask)).squeeze(1)


def build_model(model: str = "single", arch: str = "resnet18",
                weights: str = "none") -> nn.Module:
    """A model of ``model`` kind ('single' or 'mdv:POOL') on a ResNet ``arch``."""
    kind, pool = parse_model(model)
    backbone, dim = build_backbone(arch, weights)
    if kind == "single":
        return SingleImageNet(backbone, dim)
    return MDVNet(backbone, dim, pool)
