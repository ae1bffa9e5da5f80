"""The CPU testbed: moving-shapes videos, their analytic ground truth, and the small models
trained on them (``tiny-shapes`` text-to-video, the shapes CLIP).

* :mod:`~rlr_video.testbed.shapes`: the procedural data, captions and held-out split;
* :mod:`~rlr_video.testbed.scorer`: measures colour, shape, motion, speed and size from
  pixels and checks them against a prompt (the referee for reward hacking);
* :mod:`~rlr_video.testbed.tiny_model`: configs, builders and loaders of the pixel-space
  ``TextToVideoSDPipeline`` shipped in ``rlr_video/assets/tiny-shapes``;
* :mod:`~rlr_video.testbed.clip`: the open_clip video-text model shipped in
  ``rlr_video/assets/shapes-clip``, and ``CaptionWordReward``, its reading of each caption word;
* :mod:`~rlr_video.testbed.tokenizer`: CLIP's BPE trimmed to the captions' words.

Submodules import heavy libraries (diffusers, open_clip) lazily or only when imported.
"""
