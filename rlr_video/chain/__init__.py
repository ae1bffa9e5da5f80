"""Stochastic samplers as Gaussian chains: transitions, rollout and replay."""

from rlr_video.chain.flow import FlowSDETransition
from rlr_video.chain.rollout import Trajectory, chain_step, draw_noise, predict, replay, rollout
from rlr_video.chain.sample import sample_videos
from rlr_video.chain.transitions import (
    DDIMTransition,
    DDPMTransition,
    Transition,
    gaussian_log_prob,
)

__all__ = [
    "DDIMTransition",
    "DDPMTransition",
    "FlowSDETransition",
    "Trajectory",
    "Transition",
    "chain_step",
    "draw_noise",
    "gaussian_log_prob",
    "predict",
    "replay",
    "rollout",
    "sample_videos",
]
