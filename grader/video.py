"""MP4 recording of an episode: a Gymnasium wrapper that streams rendered frames to imageio.

Frames are written as they come (H.264, yuv420p, ``macro_block_size=1`` so that MsPacman keeps
its native 160x210), so a long episode never sits in memory. Scoring never renders: videos are
re-runs of already scored seeds, and the re-run's return is compared with the scored one.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class FrameRecorder(gym.Wrapper):
    """Write ``env.render()`` after the reset and after every step to ``path``."""

    def __init__(self, env: gym.Env, path: str, *, fps: int, quality: float = 6.0):
        super().__init__(env)
        import imageio.v2 as imageio

        self.path = path
        self.frames = 0
        self._writer = imageio.get_writer(
            path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
            macro_block_size=1, quality=quality, ffmpeg_log_level="error",
            # veryfast: same file size as the default preset at this quality, 1.5x less encoding time;
            # faststart: the index comes first, so a browser knows the duration before the whole file
            output_params=["-preset", "veryfast", "-movflags", "+faststart"],
        )

    def _grab(self) -> None:
        frame = self.env.render()
        if frame is not None:
            self._writer.append_data(np.asarray(frame, dtype=np.uint8))
            self.frames += 1

    def reset(self, **kwargs: Any):
        out = self.env.reset(**kwargs)
        self._grab()
        return out

    def step(self, action):
        out = self.env.step(action)
        self._grab()
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()

    def __enter__(self) -> "FrameRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
