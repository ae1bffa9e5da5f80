"""``aesthetic``: the LAION aesthetic predictor on CLIP ViT-L/14 embeddings, averaged over frames.

Reference: christophschuhmann/improved-aesthetic-predictor ``simple_inference.py``: OpenAI
``clip.load("ViT-L/14")`` and its preprocess (Pillow bicubic resize of the short side to 224,
torchvision ``CenterCrop(224)``, OpenAI mean and std), ``encode_image``, L2 normalisation, the
head. Here the preprocess runs on tensors (``resize="pil"``: Pillow's two 8-bit passes, see
:mod:`rewards.preprocess`; ``"smooth"`` skips the rounding, for training) and the model is
open_clip's ``ViT-L-14`` with OpenAI's QuickGELU, which every weights file for this head needs
(``quick_gelu`` defaults to True unless an open_clip tag or config says otherwise).

Two published heads, both on L2-normalised OpenAI ViT-L/14 image embeddings (768-d):

- the *improved* predictor (``sac+logos+ava1-l14-linearMSE.pth``; also the hub file
  ``trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth`` used by DDPO): an MLP
  768→1024→128→64→16→1 with dropouts and no activations, keys ``layers.{0,2,4,6,7}.*``;
- the original LAION linear head (``sa_0_4_vit_l_14_linear.pth``): 768→1, keys ``weight``/``bias``.

Which one a file holds is read from its keys, so real weights load unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rewards.encoders import OpenClipEncoder, follow_device
from rewards.frame_mean import FrameMeanReward
from rewards.loading import MissingWeightsError, cached, freeze, load_state_dict, resolve_file
from rewards.preprocess import resize_style
from rewards.registry import register_reward

DEFAULT_HEAD = "hf:trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth"


class AestheticMLP(nn.Module):
    """The improved aesthetic predictor's MLP, layer for layer (so its state dict keys match)."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.layers(embeddings)


def head_from_state_dict(state: dict[str, Tensor], source: str = "state dict") -> nn.Module:
    """Build the head a state dict belongs to (MLP or linear) and load it strictly."""
    if "layers.0.weight" in state:
        head: nn.Module = AestheticMLP(state["layers.0.weight"].shape[1])
    elif set(state) == {"weight", "bias"} and state["weight"].shape[0] == 1:
        head = nn.Linear(state["weight"].shape[1], 1)
    else:
        raise ValueError(
            f"{source} is not an aesthetic head: expected the MLP's 'layers.0.weight', ... or the "
            f"linear head's 'weight'/'bias'; found keys {sorted(state)[:6]}"
        )
    head.load_state_dict(state)
    return freeze(head)


def load_head(source: str | os.PathLike[str]) -> nn.Module:
    """The aesthetic head from a local file or ``hf:OWNER/REPO/FILE`` (cached per source)."""
    how = (
        "Pass head=/path/to/sac+logos+ava1-l14-linearMSE.pth (the improved MLP) or "
        "/path/to/sa_0_4_vit_l_14_linear.pth (the linear head), or put "
        f"{DEFAULT_HEAD[3:]} in the Hugging Face cache."
    )

    def load() -> nn.Module:
        path = resolve_file(source, "aesthetic head weights", how)
        return head_from_state_dict(load_state_dict(path), repr(str(path)))

    return cached(("aesthetic_head", str(source)), load)


@register_reward("aesthetic", needs_prompts=False)
class AestheticReward(FrameMeanReward):
    """Mean over frames of the LAION aesthetic score (about 1–10 for the improved head)."""

    name = "aesthetic"
    needs_prompts = False

    def __init__(
        self,
        model: str = "ViT-L-14",
        pretrained: str | None = "openai",
        head: str | os.PathLike[str] = DEFAULT_HEAD,
        quick_gelu: bool | None = None,
        resize: str = "pil",
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(chunk_size, sample_frames, checkpoint)
        rounding, clamp = resize_style(resize, self.name)
        missing = []  # both weights checked, so a user learns of both at once
        try:
            self.head = load_head(head)
        except MissingWeightsError as err:
            missing.append(err)
        try:
            self.encoder = OpenClipEncoder(
                model,
                pretrained,
                rounding=rounding,
                clamp=clamp,
                quick_gelu=quick_gelu,
                reference_quick_gelu=True,  # the head was trained on OpenAI's ViT-L/14
                dtype=dtype,
            )
        except MissingWeightsError as err:
            missing.append(err)
        if missing:
            raise MissingWeightsError.joined(missing)
        head_dim = next(self.head.parameters()).shape[1]
        if self.encoder.embed_dim not in (None, head_dim):
            raise ValueError(
                f"aesthetic head {str(head)!r} takes {head_dim}-d embeddings but open_clip "
                f"{model!r} gives {self.encoder.embed_dim}-d (the heads were trained on ViT-L-14)"
            )

    def encode_images(self, images: Tensor) -> Tensor:
        return self.encoder.encode_images(images)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        follow_device(self.head, features.device)
        return self.head(features.to(torch.float32)).squeeze(-1)
