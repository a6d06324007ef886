"""MP4 recording of an episode: a Gymnasium wrapper that streams rendered frames to imageio.

Frames are written as they come (H.264, yuv420p, ``macro_block_size=1`` so that MsPacman keeps
its native 160x210), so a long episode never sits in memory. Scoring never renders: videos are
re-runs of already scored seeds, and the re-run's return is compared with the scored one.

A task whose physics runs faster than a video needs (LunarLander: 50 Hz) renders every
``stride``-th step only, plus the last one: the video plays in real time, and rendering (the
larger cost) and encoding are divided by the stride. x264 runs on one thread: the grader's
slots already keep every core busy, and the frames arrive slower than one thread encodes them.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np


def frame_count(length: int, stride: int = 1) -> int:
    """Frames of an episode of ``length`` steps: the reset, every ``stride``-th step and the last."""
    return 1 + -(-length // stride)


class FrameRecorder(gym.Wrapper):
    """Write ``env.render()`` after the reset, after every ``stride``-th step and after the last
    step (terminated or truncated) to ``path``."""

    def __init__(self, env: gym.Env, path: str, *, fps: int, stride: int = 1, quality: float = 6.0):
        super().__init__(env)
        import imageio.v2 as imageio

        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.path = path
        self.stride = stride
        self.steps = 0
        self.frames = 0
        self._writer: Any = imageio.get_writer(
            path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
            macro_block_size=1, quality=quality, ffmpeg_log_level="error",
            # veryfast: same file size as the default preset at this quality, 1.5x less encoding time;
            # faststart: the index comes first, so a browser knows the duration before the whole file
            output_params=["-preset", "veryfast", "-threads", "1", "-movflags", "+faststart"],
        )

    def _grab(self) -> None:
        frame = self.env.render()
        if frame is not None:
            self._writer.append_data(np.asarray(frame, dtype=np.uint8))
            self.frames += 1

    def reset(self, **kwargs: Any):
        out = self.env.reset(**kwargs)
        self.steps = 0
        self._grab()
        return out

    def step(self, action):
        out = self.env.step(action)
        self.steps += 1
        if self.steps % self.stride == 0 or out[2] or out[3]:
            self._grab()
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()

    def __enter__(self) -> FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False
