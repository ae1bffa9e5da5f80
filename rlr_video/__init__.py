"""rlr-video: align text-to-video diffusion models with rewards via the Recursive Likelihood Ratio."""

__version__ = "0.1.0"
