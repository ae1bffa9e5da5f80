"""Read and write videos as (F, 3, H, W) float tensors in [0, 1].

Reading tries decord first (fast, seeks only the frames it needs) and falls back to PyAV
(which also reads GIFs and files decord rejects). Writing uses PyAV's libx264 for .mp4,
libvpx-vp9 for .webm and Pillow for .gif.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi", ".m4v")


class VideoReadError(RuntimeError):
    """A video file could not be decoded; the message names the file and every backend's reason
    (``reason`` holds the part after the file's name, for a caller that names the file itself)."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.path, self.reason = path, reason
        super().__init__(reason if path is None else f"cannot read video {str(path)!r}: {reason}")


def select_frame_indices(
    total: int, source_fps: float | None, num_frames: int | None = None, fps: float | None = None
) -> list[int]:
    """Indices of the frames to keep out of ``total``.

    ``fps`` resamples the video in time (frame ``floor(k / fps * source_fps)`` for k = 0, 1, …);
    ``num_frames`` then keeps that many, evenly spaced, first and last included. Asking for
    more frames than there are keeps them all rather than repeating frames (repeats would bias
    pixel-difference rewards such as flicker).
    """
    if total <= 0:
        return []
    indices = list(range(total))
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not source_fps or source_fps <= 0:
            raise ValueError("the video's frame rate is unknown, so --fps cannot resample it")
        step = source_fps / fps
        # The 1e-6 keeps exact multiples (e.g. 24 fps → 8 fps) from rounding down a frame.
        count = max(1, math.floor((total - 1) / step + 1e-6) + 1)
        indices = [min(total - 1, math.floor(k * step + 1e-6)) for k in range(count)]
    if num_frames is not None:
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if num_frames < len(indices):
            picks = np.linspace(0, len(indices) - 1, num_frames).round().astype(int)
            indices = [indices[i] for i in picks]
    return indices


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """(F, H, W[, C]) uint8 → (F, H, W, 3): grayscale is repeated, alpha dropped."""
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def _read_decord(path: Path, num_frames: int | None, fps: float | None) -> tuple[np.ndarray, float | None]:
    import decord

    from rlr_video.verbosity import native_stderr_silenced

    # Its FFmpeg and its own C++ log ("ERROR opening: ...") would print to stderr; the reason
    # reaches the caller in the exception instead (set_level quiets only the FFmpeg part).
    decord.logging.set_level(decord.logging.QUIET)
    with native_stderr_silenced():
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        rate = float(reader.get_avg_fps()) or None
        indices = select_frame_indices(len(reader), rate, num_frames, fps)
        if not indices:
            raise VideoReadError("no frames")
        return reader.get_batch(indices).asnumpy(), rate


def _read_pyav(path: Path, num_frames: int | None, fps: float | None) -> tuple[np.ndarray, float | None]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoReadError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        # Decoding everything is simplest and the frame count of some containers (GIF, a
        # truncated mp4) is only known after decoding; this is the fallback path anyway.
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    rate = float(rate) if rate else None
    indices = select_frame_indices(len(frames), rate, num_frames, fps)
    if not indices:
        raise VideoReadError("no frames decoded")
    return np.stack([frames[i] for i in indices]), rate


Backend = Callable[[Path, int | None, float | None], tuple[np.ndarray, float | None]]


def _backends() -> list[tuple[str, Backend]]:
    backends = []
    try:
        import decord  # noqa: F401  (optional: only x86_64 wheels exist)

        backends.append(("decord", _read_decord))
    except ImportError:
        pass
    backends.append(("PyAV", _read_pyav))
    return backends


def read_video(path: str | Path, num_frames: int | None = None, fps: float | None = None) -> Tensor:
    """Decode ``path`` to a (F, 3, H, W) float tensor in [0, 1].

    ``num_frames`` keeps that many frames, evenly spaced; ``fps`` resamples in time first (see
    :func:`select_frame_indices`). Grayscale videos come back with 3 identical channels.
    Raises :class:`VideoReadError` naming the file and each backend's reason.
    """
    return decode_video(path, num_frames, fps)[0]


def decode_video(
    path: str | Path, num_frames: int | None = None, fps: float | None = None
) -> tuple[Tensor, float | None]:
    """:func:`read_video`'s frames and the file's frame rate (None when the container does not
    say): the rate of the frames returned when neither ``num_frames`` nor ``fps`` thins them."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError("no such file", path)
    if path.stat().st_size == 0:  # what the decoders would call "invalid data"
        raise VideoReadError("empty file (0 bytes)", path)
    # Check the arguments first so a bad argument is not reported as a bad file.
    if num_frames is not None and num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    reasons = []
    for name, backend in _backends():
        try:
            array, rate = backend(path, num_frames, fps)
            break
        except Exception as err:  # noqa: BLE001  (decoders raise many unrelated types)
            reasons.append(f"{name}: {str(err).strip() or type(err).__name__}")
    else:
        raise VideoReadError("; ".join(reasons), path)
    array = _to_rgb(np.ascontiguousarray(array))
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0), rate


def _to_uint8(frames: Tensor | np.ndarray) -> np.ndarray:
    """(F, C, H, W) floats in [0, 1] → (F, H, W, 3) uint8."""
    frames = torch.as_tensor(frames).detach().float().cpu()
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"expected frames of shape (F, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1)
    array = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return array.contiguous().numpy()


def _pad_even(array: np.ndarray) -> np.ndarray:
    """Pad H and W to even sizes by repeating the last row/column (yuv420p needs even sizes)."""
    _, height, width, _ = array.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    return np.pad(array, pad, mode="edge") if height % 2 or width % 2 else array


_CODECS = {".webm": ("libvpx-vp9", {"crf": "30", "b": "0"})}
_DEFAULT_CODEC = ("libx264", {"crf": "18", "preset": "medium"})


def write_video(path: str | Path, frames: Tensor | np.ndarray, fps: float = 8) -> Path:
    """Encode (F, 3, H, W) floats in [0, 1] to ``path``.

    .mp4 (and .mov/.mkv) use libx264, .webm uses VP9, both yuv420p so every player opens them;
    odd sizes are padded by one repeated row/column. .gif goes to :func:`write_gif`.
    """
    import av

    path = Path(path)
    if path.suffix.lower() == ".gif":
        return write_gif(path, frames, fps)
    array = _pad_even(_to_uint8(frames))
    codec, options = _CODECS.get(path.suffix.lower(), _DEFAULT_CODEC)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for image in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_gif(path: str | Path, frames: Tensor | np.ndarray, fps: float = 8) -> Path:
    """Write (F, 3, H, W) floats in [0, 1] as a looping GIF (Pillow, adaptive palette)."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(image) for image in _to_uint8(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return path


def list_videos(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Expand files, folders (their video files) and glob patterns into a list of paths.

    Explicit files are kept even when missing or oddly named, so the caller can report them.
    """
    import glob

    found: list[Path] = []
    for item in map(str, paths):
        if glob.has_magic(item):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            found.extend(m for m in matches if m.is_file() and m.suffix.lower() in VIDEO_EXTENSIONS)
        elif Path(item).is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                p for p in sorted(Path(item).glob(pattern)) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
        else:
            found.append(Path(item))
    unique = list(dict.fromkeys(found))  # keep the first occurrence, drop repeats
    return unique
