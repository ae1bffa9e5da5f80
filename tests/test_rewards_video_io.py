"""rlr_video.video_io: real files written with PyAV / Pillow, read back with decord and PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from reward_fixtures import smooth_videos

from rlr_video import video_io
from rlr_video.video_io import (
    VideoReadError,
    list_videos,
    read_video,
    select_frame_indices,
    write_gif,
    write_video,
)

HAS_DECORD = any(name == "decord" for name, _ in video_io._backends())


@pytest.fixture(scope="module")
def clip8() -> torch.Tensor:
    return smooth_videos(batch=1, frames=8, size=32)[0]  # (8, 3, 32, 32), smooth so codecs keep it


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_round_trip(tmp_path: Path, clip8: torch.Tensor, suffix: str) -> None:
    path = write_video(tmp_path / f"v{suffix}", clip8, fps=8)
    frames = read_video(path)
    assert frames.shape == clip8.shape and frames.dtype == torch.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    assert (frames - clip8).abs().mean() < 0.03  # lossy codecs / GIF palette, smooth content


def test_write_gif_directly(tmp_path: Path, clip8: torch.Tensor) -> None:
    path = write_gif(tmp_path / "v.gif", clip8, fps=4)
    assert read_video(path).shape == clip8.shape


def test_odd_size_is_padded_for_yuv420(tmp_path: Path, clip8: torch.Tensor) -> None:
    odd = clip8[:, :, :31, :29]
    frames = read_video(write_video(tmp_path / "odd.mp4", odd))
    assert frames.shape == (8, 3, 32, 30)
    assert (frames[:, :, :31, :29] - odd).abs().mean() < 0.03


def test_pyav_fallback_matches_decord(tmp_path: Path, clip8: torch.Tensor) -> None:
    if not HAS_DECORD:
        pytest.skip("decord is not installed")
    path = write_video(tmp_path / "v.mp4", clip8, fps=12)
    for count in (None, 3):
        (by_decord, decord_fps), (by_pyav, pyav_fps) = (
            read(path, count, None) for read in (video_io._read_decord, video_io._read_pyav)
        )
        # Two ffmpeg builds convert the decoded YUV 4:2:0 to RGB (swscale), whose SIMD paths may
        # round a pixel one 8-bit level apart on another CPU; measured equal here. Neighbouring
        # frames differ by 19 levels on average, 38-41 at most.
        levels = np.abs(by_decord.astype(np.int16) - by_pyav.astype(np.int16))
        assert by_decord.shape == by_pyav.shape and levels.max() <= 1, levels.max()
        assert decord_fps == pyav_fps == 12.0  # both give the file's frame rate


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.mkv"
    with av.open(str(path), "w") as container:  # ffv1 keeps a real 'gray' pixel format
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "gray"
        for level in (0, 100, 200):
            image = np.full((12, 16), level, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="gray")))
        container.mux(stream.encode())
    frames = read_video(path)
    assert frames.shape == (3, 3, 12, 16)
    assert torch.equal(frames[:, 0], frames[:, 1]) and torch.equal(frames[:, 0], frames[:, 2])
    # lossless gray copied to RGB by an integer conversion: exact here, one rounding (a level) allowed
    assert torch.allclose(frames[:, 0, 0, 0] * 255, torch.tensor([0.0, 100.0, 200.0]), rtol=0, atol=1.0)


def test_frame_selection(tmp_path: Path, clip8: torch.Tensor) -> None:
    path = write_video(tmp_path / "v.mp4", clip8, fps=8)
    full = read_video(path)
    assert torch.equal(read_video(path, num_frames=3), full[[0, 4, 7]])  # linspace(0, 7, 3) rounded
    assert torch.equal(read_video(path, fps=4), full[[0, 2, 4, 6]])
    assert torch.equal(read_video(path, num_frames=100), full)  # never repeats frames


def test_select_frame_indices() -> None:
    assert select_frame_indices(10, 8.0) == list(range(10))
    assert select_frame_indices(10, 8.0, num_frames=4) == [0, 3, 6, 9]
    assert select_frame_indices(24, 24.0, fps=8.0) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert select_frame_indices(5, 8.0, fps=16.0) == [0, 0, 1, 1, 2, 2, 3, 3, 4]  # upsampling repeats
    assert select_frame_indices(1, 8.0, num_frames=16) == [0]
    assert select_frame_indices(0, 8.0) == []
    with pytest.raises(ValueError, match="frame rate is unknown"):
        select_frame_indices(5, None, fps=4.0)


def test_bad_arguments_are_not_reported_as_bad_files(tmp_path: Path, clip8: torch.Tensor) -> None:
    path = write_video(tmp_path / "v.mp4", clip8)
    with pytest.raises(ValueError, match="num_frames"):
        read_video(path, num_frames=0)
    with pytest.raises(ValueError, match="fps"):
        read_video(path, fps=-1)


def test_unreadable_files_name_the_file(tmp_path: Path, clip8: torch.Tensor) -> None:
    good = write_video(tmp_path / "good.mp4", clip8).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"not a video at all")
    for path in (truncated, garbage):
        with pytest.raises(VideoReadError, match=path.name) as info:
            read_video(path)
        assert "PyAV" in str(info.value)  # every backend's reason is given
    with pytest.raises(VideoReadError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoReadError) as info:
        read_video(empty)
    assert str(info.value) == f"cannot read video {str(empty)!r}: empty file (0 bytes)"
    assert info.value.reason == "empty file (0 bytes)"


def test_list_videos(tmp_path: Path, clip8: torch.Tensor) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.mp4", "a.gif", "sub/c.webm"):
        write_video(tmp_path / name, clip8[:2])
    (tmp_path / "a.txt").write_text("a prompt")
    assert [p.name for p in list_videos([tmp_path])] == ["a.gif", "b.mp4"]
    assert [p.name for p in list_videos([tmp_path], recursive=True)] == ["a.gif", "b.mp4", "c.webm"]
    assert [p.name for p in list_videos([str(tmp_path / "**" / "*.webm")])] == ["c.webm"]
    assert [p.name for p in list_videos([str(tmp_path / "*")])] == ["a.gif", "b.mp4"]  # sidecars skipped
    missing = tmp_path / "missing.mp4"
    assert list_videos([missing, tmp_path / "b.mp4", tmp_path / "b.mp4"]) == [missing, tmp_path / "b.mp4"]
