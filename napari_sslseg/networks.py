"""Networks: MONAI's 2D U-Net with dropout, a per-pixel and a per-slice discriminator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, PatchDiscriminator
from torch import nn

if TYPE_CHECKING:
    from .config import TrainConfig


def build_unet(
    num_classes: int, width: int = 16, dropout: float = 0.1, in_channels: int = 1, dropout_scope: str = "last"
) -> nn.Module:
    """MONAI's BasicUNet in 2D.

    Args:
        num_classes: output channels, background included.
        width: features of the first level; the levels have (1, 1, 2, 4, 8) times it.
        dropout: channel dropout rate; it is what MC-dropout uncertainty samples.
        in_channels: image channels.
        dropout_scope: one of ``config.DROPOUT_SCOPES``, checked with the config that holds it:
            "last" = dropout only before the classifier (the last decoder block's
            last convolution), "all" = after every convolution. Dropout everywhere slows
            learning: on the Colin27 crop (120 steps, 2 and 4 annotated slices, 2 seeds) a
            supervised model reached mean Dice 0.27 / 0.29 with it and 0.40 / 0.45 with the
            last block's only.
    """
    w = int(width)
    net = BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        features=(w, w, 2 * w, 4 * w, 8 * w, w),
        dropout=dropout,
    )
    # Element-wise dropout draws one random number per activation and took more CPU time than
    # the convolutions; dropping whole feature maps (channel dropout) draws one per channel and
    # is a standard choice for MC-dropout in segmentation networks.
    _swap_dropout(net, lambda d: nn.Dropout2d(d.p))
    if dropout_scope == "last":
        keep = _last_adn(net).D
        _swap_dropout(net, lambda d: d if d is keep else nn.Identity())
    return net


def input_channels(config: "TrainConfig", num_classes: int) -> int:
    """The network's input: the image (the slice and ``context`` neighbours on each side), plus the
    prior's foreground classes with ``prior_input``."""
    return 1 + 2 * config.context + (num_classes - 1 if config.prior_input else 0)


def student_network(config: "TrainConfig", num_classes: int) -> nn.Module:
    """The segmenter a training ``config`` describes for ``num_classes`` classes: what a training
    builds, and what a checkpoint's weights are loaded into."""
    return build_unet(num_classes, config.width, config.dropout, in_channels=input_channels(config, num_classes),
                      dropout_scope=config.dropout_scope)


_DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d)


def _swap_dropout(net: nn.Module, swap) -> None:
    """Replace each dropout layer ``d`` of ``net`` by ``swap(d)``, in place."""
    for name, child in net.named_children():
        if isinstance(child, _DROPOUTS):
            setattr(net, name, swap(child))
        else:
            _swap_dropout(child, swap)


def _last_adn(net: nn.Module) -> nn.Module:
    """The activation-dropout-norm of a BasicUNet's last convolution, before the classifier."""
    return net.upcat_1.convs.conv_1.adn


def dropout_layers(net: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``net``: what MC dropout samples."""
    return [m for m in net.modules() if isinstance(m, _DROPOUTS)]


class PixelDiscriminator(nn.Module):
    """Fully convolutional discriminator with one confidence logit per pixel (Hung et al. 2018).

    MONAI's PatchDiscriminator scores patches; its map is upsampled to the input size so
    that every pixel gets a logit, as in the paper.
    """

    def __init__(self, num_classes: int, width: int = 32, layers: int = 3):
        super().__init__()
        self.net = PatchDiscriminator(
            spatial_dims=2, channels=width, in_channels=num_classes, out_channels=1, num_layers_d=layers, norm=None
        )

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        logits = self.net(probabilities)[-1]
        return F.interpolate(logits, size=probabilities.shape[-2:], mode="bilinear", align_corners=False)


class ImageDiscriminator(nn.Module):
    """One logit per slice from a probability map and its image: the evaluation network of
    Zhang et al. 2017 (DAN), as SSL4MIS builds it: a strided convolution of each input, added,
    three more strided convolutions (LeakyReLU 0.2, channel dropout 0.5), a global average and
    a linear layer. The average makes it take any slice size."""

    def __init__(self, num_classes: int, width: int = 32, image_channels: int = 1):
        super().__init__()
        w = width
        self.from_map = nn.Conv2d(num_classes, w, 4, stride=2, padding=1)
        self.from_image = nn.Conv2d(image_channels, w, 4, stride=2, padding=1)
        layers = []
        for i in range(3):
            layers += [nn.LeakyReLU(0.2), nn.Dropout2d(0.5) if i < 2 else nn.Identity(),
                       nn.Conv2d(w * 2**i, w * 2 ** (i + 1), 4, stride=2, padding=1)]
        self.body = nn.Sequential(*layers, nn.LeakyReLU(0.2))
        self.classifier = nn.Linear(w * 8, 1)

    def forward(self, probabilities: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = self.body(self.from_map(probabilities) + self.from_image(image))
        return self.classifier(h.mean(dim=(-2, -1)))


class LastBlockSampler:
    """MC-dropout over the last block's dropout only: the network runs once, the samples are cheap.

    In a BasicUNet the last dropout sits after the last normalisation, followed by the
    activation and the 1x1 classifier. Its input is kept from one deterministic pass;
    each sample then redraws the channel mask and reapplies the activation and the
    classifier, a fraction of a percent of a forward pass. The samples are those of
    MC dropout restricted to the last layer (Gal & Ghahramani 2016 with dropout in
    one layer), so they measure less of the network's uncertainty than sampling every
    block, at 1/9 of the cost for 8 passes.
    """

    def __init__(self, net: nn.Module):
        adn = _last_adn(net)
        self.dropout, self.act, self.classifier = adn.D, adn.A, net.final_conv
        self.net = net
        self.features: torch.Tensor | None = None

    @staticmethod
    def supports(net: nn.Module) -> bool:
        try:
            adn = _last_adn(net)
            return isinstance(adn.D, nn.Dropout2d) and isinstance(net.final_conv, nn.Conv2d)
        except AttributeError:
            return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic logits; keeps the last dropout's input for :meth:`sample`."""

        def keep(_module, inputs):
            self.features = inputs[0].clone()  # the activation after it works in place

        handle = self.dropout.register_forward_pre_hook(keep)
        try:
            return self.net(x)
        finally:
            handle.remove()

    def sample(self) -> torch.Tensor:
        """Logits of one MC pass, from the features kept by the last :meth:`forward`."""
        h = F.dropout2d(self.features, self.dropout.p, training=True)
        return self.classifier(self.act(h))


def enable_dropout(model: nn.Module, enabled: bool = True) -> None:
    """Switch only the dropout layers to sampling mode (MC dropout), leaving the rest as is."""
    for m in dropout_layers(model):
        m.train(enabled)
