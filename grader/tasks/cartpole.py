"""Task ``cartpole``: Gymnasium ``CartPole-v1``, the smallest homework (and the proof that a task
is one module).

Default arguments, the registered 500-step limit; the episode is reset with its seed; "solved"
is a return of 475. Policy: float32 ``[batch, 4]`` -> ``[batch, 2]`` (argmax) or an int64 action.

Diagnostics: an episode ends balanced (truncated at the 500-step limit), or terminated because
the pole fell (``|angle| > theta_threshold_radians``, 12 degrees) or the cart left the track
(``|x| > x_threshold``, 2.4), the environment's own thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grader.tasks.base import Outcome, Task, Tracker, Turn

OUTCOMES = (
    Outcome("balanced", "balanced to the limit", success=True),
    Outcome("fell", "let the pole fall",
            hint="{n} of {total} episodes ended with the pole fallen past 12 degrees: push towards the side the "
                 "pole leans to, earlier; train longer"),
    Outcome("off_track", "left the track",
            hint="{n} of {total} episodes ended with the cart off the track (|x| > 2.4): the pole is kept up by "
                 "drifting; the cart's position and speed must matter to the policy too"),
)


class CartTracker(Tracker):
    def finish(self, turn: Turn) -> dict[str, Any]:
        x, v, theta, omega = (float(a) for a in turn.state[:4])
        u = self.env.unwrapped
        if abs(x) > float(getattr(u, "x_threshold", 2.4)):
            outcome = "off_track"
        elif abs(theta) > float(getattr(u, "theta_threshold_radians", 0.2095)):
            outcome = "fell"
        else:
            outcome = "balanced"
        return {"outcome": outcome, "end": {"x": round(x, 4), "angle": round(theta, 4)}}


@dataclass(frozen=True)
class CartPole(Task):
    def tracker(self, env: Any) -> Tracker:
        return CartTracker(env)


TASK = CartPole(
    name="cartpole",
    env_id="CartPole-v1",
    state_shape=(4,),
    n_actions=2,
    success_threshold=475.0,
    description="Gymnasium CartPole-v1 (2 actions, 500-step limit)",
    pool_size=8,
    video_fps=50,  # CartPole's own metadata: 50 frames per second
    probe_stride=5,
    input_hint="the state is CartPole's 4 numbers (position, velocity, angle, angular velocity); export with an input of shape (1, 4)",
    output_hint="the output is 2 action scores (push left, push right)",
    action_names=("push left", "push right"),
    outcomes=OUTCOMES,
)
