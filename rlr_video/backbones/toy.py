"""A tiny, complete ``VideoBackbone``: the "bring your own model" example and the test bed
for the estimators.

It has everything a real adapter has (text conditioning with classifier-free guidance, a
DDIM-eta chain from a diffusers scheduler, a decoder to RGB frames) in a few thousand
parameters, so estimators can be averaged over thousands of draws on a CPU.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator, Sequence

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from rlr_video.backbones.family import register_family
from rlr_video.chain import DDIMTransition, Transition, draw_noise


def hash_tokens(prompts: Sequence[str], num_buckets: int) -> list[list[int]]:
    """Bag-of-words token ids with a stable hash (no tokenizer files needed)."""
    return [[zlib.crc32(w.encode()) % num_buckets for w in p.lower().split()] for p in prompts]


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float().reshape(-1, 1) * freqs.to(t.device)
    return torch.cat([args.sin(), args.cos()], dim=-1)


class ToyDenoiser(nn.Module):
    """eps-prediction over (B, C, F, H, W): conv3d -> (+ time + text) -> SiLU -> conv3d."""

    def __init__(self, channels: int = 2, hidden: int = 8, text_buckets: int = 64):
        super().__init__()
        self.hidden = hidden
        self.text = nn.EmbeddingBag(text_buckets, hidden, mode="mean")
        self.time = nn.Linear(hidden, hidden)
        self.conv_in = nn.Conv3d(channels, hidden, 3, padding=1)
        self.conv_out = nn.Conv3d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, text: Tensor) -> Tensor:
        emb = self.time(timestep_embedding(t, self.hidden)) + text
        h = torch.nn.functional.silu(self.conv_in(x) + emb[:, :, None, None, None])
        return self.conv_out(h)


@register_family(
    "toy",
    decoder="frame_local",  # a 1x1 map per pixel
    shard_blocks=("EmbeddingBag",),  # its frozen text embedding: encode calls it outside the denoiser
    trace_on_cpu=True,  # tiny, and it computes with step indices on the latents' device
)
class ToyBackbone:
    """A ``VideoBackbone`` around ``ToyDenoiser`` with a fixed random 1x1 "VAE decoder".

    It also shows what a backbone of one's own declares to be planned, checkpointed and sharded:
    its family (``register_family``, above) and the cost model's hook ``latent_shape_for``.

    Args:
        denoiser: the trainable model.
        transition: the chain (``DDIMTransition`` from a diffusers DDIM scheduler by default).
        latent_shape: (C, F, H, W) of one video's latents.
        guidance_scale: classifier-free guidance; 1 disables the unconditional branch.
        trainable: parameter-name prefixes that are trained. The default leaves the text
            embedding frozen: estimators encode prompts once per update without gradients.
    """

    def __init__(
        self,
        denoiser: ToyDenoiser,
        transition: Transition,
        latent_shape: tuple[int, int, int, int] = (2, 2, 4, 4),
        guidance_scale: float = 2.0,
        trainable: Sequence[str] | None = ("conv_in", "conv_out", "time"),
        seed: int = 0,
    ):
        self.denoiser = denoiser
        self.transition = transition
        self.num_steps = transition.num_steps
        self.latent_shape = latent_shape
        self.guidance_scale = guidance_scale
        decoder_rng = torch.Generator().manual_seed(seed + 1)
        self.decoder_weight = torch.randn(3, latent_shape[0], generator=decoder_rng)
        self._trainable = [
            p
            for name, p in denoiser.named_parameters()
            if trainable is None or any(name.startswith(prefix) for prefix in trainable)
        ]
        for p in denoiser.parameters():
            p.requires_grad_(any(p is q for q in self._trainable))
        # The initial trainable weights: this model trains its full weights, so the reference
        # policy of a KL penalty is the model as built (see ``base_model``).
        self._base = [p.detach().clone() for p in self._trainable]

    @classmethod
    def create(
        cls,
        num_steps: int = 10,
        eta: float = 1.0,
        latent_shape: tuple[int, int, int, int] = (2, 2, 4, 4),
        hidden: int = 8,
        seed: int = 0,
        **kwargs,
    ) -> ToyBackbone:
        """A randomly initialised toy model on a DDIM chain of ``num_steps`` steps."""
        torch.manual_seed(seed)
        # trailing spacing and alpha-bar 1 after the last step: the last step predicts x0
        # (deterministic), so the first-order term sees the denoiser, as with SD-style models.
        scheduler = DDIMScheduler(
            beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
        )
        transition = DDIMTransition.from_scheduler(scheduler, num_steps, eta=eta)
        return cls(ToyDenoiser(latent_shape[0], hidden), transition, latent_shape, seed=seed, **kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._trainable)

    @property
    def num_frames(self) -> int:
        return self.latent_shape[1]  # latents are the video: no compression

    @property
    def height(self) -> int:
        return self.latent_shape[2]

    @property
    def width(self) -> int:
        return self.latent_shape[3]

    def latent_shape_for(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """One video's latents for a video of that size (the cost model's hook)."""
        return (self.latent_shape[0], frames, height, width)

    @contextlib.contextmanager
    def base_model(self) -> Iterator[None]:
        """Inside: ``predict`` computes with the trainable weights as built (the reference
        policy); the trained values are back on exit. The tensors are swapped, not copied."""
        trained = [p.data for p in self._trainable]
        for p, base in zip(self._trainable, self._base):
            p.data = base.to(p.device)
        try:
            yield
        finally:
            for p, data in zip(self._trainable, trained):
                p.data = data

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Text embeddings for [unconditional; conditional] prompts, stacked on the batch."""
        device = self.decoder_weight.device
        buckets = self.denoiser.text.num_embeddings
        ids = hash_tokens(list(prompts), buckets)
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], device=device).cumsum(0)
        cond = self.denoiser.text(flat, offsets)
        return torch.cat([torch.zeros_like(cond), cond])  # the empty prompt embeds to zero

    def initial_latents(self, batch_size: int, generator: torch.Generator) -> Tensor:
        like = torch.empty(batch_size, *self.latent_shape, device=self.decoder_weight.device)
        return draw_noise(like, generator)

    def predict(self, latents: Tensor, step: int, cond: Tensor) -> Tensor:
        t = self.transition.timestep(step).to(latents.device).expand(latents.shape[0])
        if self.guidance_scale == 1.0:
            eps = self.denoiser(latents, t, cond[latents.shape[0] :])
        else:
            uncond, text = self.denoiser(latents.repeat(2, 1, 1, 1, 1), t.repeat(2), cond).chunk(2)
            eps = uncond + self.guidance_scale * (text - uncond)
        # The exact eps-prediction for N(0, I) data, sqrt(1 - alpha_bar_t) x_t, plus the network
        # as a residual: a random init then samples sensible latents (x0 of order 1) instead of
        # saturating the decoder, so rewards have gradients from the first update.
        alpha_bar = float(self.transition.alphas_cumprod[int(t[0])])
        return (1 - alpha_bar) ** 0.5 * latents + eps

    def decode(self, latents: Tensor) -> Tensor:
        rgb = torch.einsum("oc,bcfhw->bfohw", self.decoder_weight.to(latents), latents)
        return torch.sigmoid(rgb)

    def to(self, device: torch.device | str) -> ToyBackbone:
        self.denoiser.to(device)
        self.decoder_weight = self.decoder_weight.to(device)
        return self
