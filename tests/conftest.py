"""Shared test settings: never reach the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
