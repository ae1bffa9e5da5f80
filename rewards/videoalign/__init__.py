"""``videoalign``: VideoAlign's VideoReward (KwaiVGI/VideoAlign), differentiable w.r.t. the frames.

See :mod:`rewards.videoalign.reward` for what it computes and :mod:`rewards.videoalign.checkpoint`
for the files it reads.
"""

from rewards.videoalign.reward import HEADS, VideoAlignReward

__all__ = ["HEADS", "VideoAlignReward"]
