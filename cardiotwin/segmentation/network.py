"""The segmentation network: a compact MONAI 3D U-Net, built from a validated spec.

Why a residual U-Net (``monai.networks.nets.UNet``) at 2.5 mm: training must fit in under an hour
on two shared CPU cores, and the shipped weights are committed to git (a few MB). At 2.5 mm a
64^3 patch spans 160 mm, the whole heart with its great vessels, so four stride-2 levels give
the bottleneck a receptive field over all chambers (needed to tell LV from RV from atria, which
have the same intensity). The same U-Net in 2D (``spatial_dims`` 2) segments the slices of
thick-slice cine MR stacks at their own in-plane resolution (``inference.predict_slices``). DynUNet / nnU-Net-style plans and SegResNet are stronger but several
times slower per step on a CPU; the bundle format allows swapping them in later.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cardiotwin.segmentation.synth import N_CLASSES

NETWORK_TYPES = ("monai.UNet",)


@dataclass(frozen=True)
class NetworkSpec:
    """Hyper-parameters of the network (stored in a bundle's metadata.json under "network")."""

    type: str = "monai.UNet"
    spatial_dims: int = 3  # 3: volumes; 2: slices of a thick-slice stack (inference.predict_slices)
    in_channels: int = 1
    out_channels: int = N_CLASSES
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    dropout: float = 0.0

    def validate(self) -> None:
        """Raise ValueError with the reason when the hyper-parameters cannot build a network."""
        if self.type not in NETWORK_TYPES:
            raise ValueError(f"network type {self.type!r} not supported (supported: {', '.join(NETWORK_TYPES)})")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels not in ((1, 3) if self.spatial_dims == 2 else (1,)):
            raise ValueError(f"in_channels must be 1 (one scan; 2D networks: 1, or 3 for a slice and its two "
                             f"neighbours), got {self.in_channels}")
        if self.out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (background + labels), got {self.out_channels}")
        if len(self.channels) < 2 or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must hold at least two positive sizes, got {self.channels}")
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"need len(strides) == len(channels) - 1, got {len(self.strides)} and {len(self.channels)}")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        if self.num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {self.num_res_units}")
        if self.norm not in ("instance", "batch"):
            raise ValueError(f"norm must be 'instance' or 'batch', got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (product of the strides)."""
        d = 1
        for s in self.strides:
            d *= s
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network key(s) {', '.join(unknown)}")
        kw = dict(data)
        for k in ("channels", "strides"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        spec = cls(**kw)
        spec.validate()
        return spec

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    """The torch module for ``spec``: input (B, 1, X, Y, Z), output logits (B, out_channels, X, Y, Z)
    (or (B, 1, X, Y) -> (B, out_channels, X, Y) for ``spatial_dims`` 2)."""
    spec.validate()
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        channels=spec.channels,
        strides=spec.strides,
        num_res_units=spec.num_res_units,
        norm=spec.norm,
        dropout=spec.dropout,
    )


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
