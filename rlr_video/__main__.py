"""``python -m rlr_video`` behaves like ``rlr-video`` (so ``accelerate launch -m rlr_video`` works)."""

import sys

from rlr_video.cli import main

sys.exit(main())
