"""torchreid CNN baselines ([osnet], [resnet50]) wrapped to the model contract.

torchreid's models return logits in train mode and the feature only in eval mode; the wrapper
always returns the feature, computed the way torchreid computes it: ``featuremaps`` -> global
average pool -> the model's ``fc`` when it has one (OSNet: Linear + BN + ReLU to 512; ResNet-50:
none, the pooled 2048-d map). torchreid's identity classifier is replaced by ``nn.Identity``:
training heads live outside the backbone (``reidbench.models.heads``).

Weights are always randomly initialised (``pretrained=False``): nothing is downloaded. Keypoints
are accepted and ignored. The ViT fields of ``ModelConfig`` (``patch_size``, ``embed_dim``,
``depth``, ``num_heads``, ``mlp_ratio``, ``drop_path``, ``ape``) do not apply and are ignored;
``model.size`` picks the OSNet width (``OSNET_WIDTHS``) and is ignored by ResNet-50. Any input
size works (global pooling); the smallest tested is 64x32.

torchreid is imported on first build, not with ``reidbench.models``: its package import takes
seconds, and it is an optional extra (``pip install 'reidbench[cnn]'``) that nothing but these
two models needs.

References: Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019;
He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; torchreid 0.2.5
(https://github.com/KaiyangZhou/deep-person-reid).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from reidbench.config import ModelConfig
from reidbench.config_rules import CNN_MODELS
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.registry import MODELS

# model.size -> torchreid OSNet; every width has a 512-d feature (its fc maps to 512)
OSNET_WIDTHS: dict[str, str] = {
    "nano": "osnet_x0_25",
    "tiny": "osnet_x0_5",
    "small": "osnet_x0_75",
    "base": "osnet_x1_0",
}


class TorchreidBackbone(nn.Module):
    """A torchreid CNN whose forward is always the (B, D) feature, in train and eval mode.

    Args:
        net: a torchreid model with ``featuremaps``, ``global_avgpool``, ``fc`` (or None) and
            ``feature_dim`` (OSNet, ResNet family). Its ``classifier`` is replaced by Identity.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        for attr in ("featuremaps", "global_avgpool", "fc", "feature_dim"):
            if not hasattr(net, attr):
                raise TypeError(f"{type(net).__name__} has no {attr!r}; not a supported torchreid CNN")
        net.classifier = nn.Identity()  # unused: heads sit outside the backbone
        self.net = net
        self.embed_dim = int(net.feature_dim)

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images (keypoints ignored) -> (B, D) features."""
        fmap = self.net.featuremaps(images)  # (B, C, h, w)
        feats = self.net.global_avgpool(fmap).flatten(1)  # (B, C)
        if self.net.fc is not None:
            feats = self.net.fc(feats)  # (B, D)
        return feats


def build_torchreid(name: str) -> TorchreidBackbone:
    """Randomly initialised torchreid model ``name`` (never pretrained), wrapped. Without
    torchreid (or one of the modules it imports) a ReidbenchError names the optional extra."""
    with warnings.catch_warnings():  # torchreid warns at import about its optional Cython ranker
        warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)
        try:
            from torchreid.reid.models import build_model
        except ImportError as exc:
            missing = getattr(exc, "name", None) or "torchreid"
            raise ReidbenchError(
                f"the CNN baselines ({', '.join(sorted(CNN_MODELS))}) need torchreid, an optional "
                f"extra, and {missing} is not installed: pip install 'reidbench[cnn]'"
            ) from None

    net = build_model(name, num_classes=1, loss="softmax", pretrained=False, use_gpu=False)
    return TorchreidBackbone(net)


@MODELS.register("osnet")
def osnet(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """OSNet; ``model.size`` nano/tiny/small/base -> osnet_x0_25/x0_5/x0_75/x1_0, D = 512."""
    if cfg.size not in OSNET_WIDTHS:
        raise ConfigError(
            f"unknown model.size {cfg.size!r} for osnet; expected one of: {', '.join(OSNET_WIDTHS)}"
        )
    return build_torchreid(OSNET_WIDTHS[cfg.size])


@MODELS.register("resnet50")
def resnet50(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """torchreid ResNet-50 (last stride 2), D = 2048; ``model.size`` is ignored."""
    return build_torchreid("resnet50")
