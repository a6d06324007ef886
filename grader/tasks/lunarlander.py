"""Task ``lunarlander``: the actor-critic homework on Gymnasium ``LunarLander-v3``.

Default arguments (discrete actions, no wind, the registered 1000-step limit); the episode is
reset with its seed and the return is the sum of the rewards. Policy: float32 ``[batch, 8]`` ->
``[batch, 4]`` (probabilities, logits or Q-values; argmax) or an int64 action.

Diagnostics (:class:`LanderTracker`): how each episode ended, read from the environment's own
signals on the last step, in the order Gymnasium's ``LunarLander.step`` applies them: the episode
terminates with -100 when ``game_over`` (the lander's body touched the ground) or ``|x| >= 1``
(off the screen), and with +100 when ``not lander.awake`` (at rest; this one wins when both
hold); otherwise the TimeLimit wrapper truncated it at 1000 steps. A landing is between the flags
when ``|x| <= 0.2`` (the helipad spans x = -0.2..0.2 in the observation's units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grader.tasks.base import Outcome, Task, Tracker, Turn

HELIPAD_HALF_WIDTH = 0.2  # the flags, in the observation's x units

OUTCOMES = (
    Outcome("landed", "landed between the flags", success=True),
    Outcome("landed_outside", "landed outside the flags", success=True,
            hint="{n} of {total} episodes landed outside the flags: the lander comes to rest away from the pad; "
                 "steer towards x = 0 with the side engines before touching down"),
    Outcome("crashed", "crashed",
            hint="{n} of {total} episodes crashed (the lander's body hit the ground): it comes down too fast or "
                 "tilted; brake with the main engine and keep it upright, and train longer"),
    Outcome("flew_off", "flew off the screen",
            hint="{n} of {total} episodes flew off the screen (|x| >= 1): the lander drifts sideways; it must "
                 "use the side engines to stay over the pad"),
    Outcome("timeout_ground", "on the ground but never at rest at the limit",
            hint="{n} of {total} episodes touched down but never came to rest before the 1000-step limit: the "
                 "lander keeps firing or rocking on the ground; cut the engines once both legs touch"),
    Outcome("timeout_flying", "still flying at the limit",
            hint="{n} of {total} episodes ran out of time still flying: the lander hovers and never settles; "
                 "reward landing (or penalise time) and train longer"),
)


class LanderTracker(Tracker):
    """Reads the end of an episode from the environment (nothing per step)."""

    def finish(self, turn: Turn) -> dict[str, Any]:
        s = [float(v) for v in turn.state[:8]]
        x, y, vx, vy = s[0], s[1], s[2], s[3]
        legs = int(s[6] > 0.5) + int(s[7] > 0.5)
        u = self.env.unwrapped
        lander = getattr(u, "lander", None)
        if lander is not None and not lander.awake:
            outcome = "landed" if abs(x) <= HELIPAD_HALF_WIDTH else "landed_outside"
        elif getattr(u, "game_over", False):
            outcome = "crashed"
        elif abs(x) >= 1.0:
            outcome = "flew_off"
        else:
            outcome = "timeout_ground" if legs else "timeout_flying"
        speed = (vx * vx + vy * vy) ** 0.5
        return {"outcome": outcome, "end": {"x": round(x, 4), "y": round(y, 4), "speed": round(speed, 4),
                                            "angle": round(s[4], 4), "legs": legs}}


@dataclass(frozen=True)
class LunarLander(Task):
    def tracker(self, env: Any) -> Tracker:
        return LanderTracker(env)

    def outcome_line(self, diag: Any) -> str:
        c = {o.key: o.count for o in diag.outcomes}
        landed = c.get("landed", 0) + c.get("landed_outside", 0)
        parts = []
        if landed:
            parts.append(f"{landed} landed" + (f" ({c['landed_outside']} outside the flags)" if c.get("landed_outside") else ""))
        parts += [f"{o.count} {o.label}" for o in diag.outcomes if o.count and o.key not in ("landed", "landed_outside")]
        return "outcomes: " + ", ".join(parts) if parts else ""


TASK = LunarLander(
    name="lunarlander",
    env_id="LunarLander-v3",
    state_shape=(8,),
    n_actions=4,
    success_threshold=200.0,
    description="actor-critic on Gymnasium LunarLander-v3 (discrete, 1000-step limit)",
    pool_size=16,  # one model call per 16 states: 4% faster than 8 on 1000-step episodes, 24 no faster
    video_fps=25,  # every second step of the 50 Hz physics: real time, half the rendering and encoding
    video_stride=2,
    probe_stride=5,
    input_hint="the state is LunarLander's 8 numbers; export with an input of shape (1, 8)",
    output_hint="export the actor only: its output is the 4 action probabilities (or logits)",
    notebook="grader.notebook.lunarlander",
    action_names=("do nothing", "fire left engine", "fire main engine", "fire right engine"),
    outcomes=OUTCOMES,
)
