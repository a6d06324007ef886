"""Task ``lunarlander``: the actor-critic homework on Gymnasium ``LunarLander-v3``.

Default arguments (discrete actions, no wind, the registered 1000-step limit); the episode is
reset with its seed and the return is the sum of the rewards. Policy: float32 ``[batch, 8]`` ->
``[batch, 4]`` (probabilities, logits or Q-values; argmax) or an int64 action.
"""

from __future__ import annotations

from grader.tasks.base import Task

TASK = Task(
    name="lunarlander",
    env_id="LunarLander-v3",
    state_shape=(8,),
    n_actions=4,
    success_threshold=200.0,
    description="actor-critic on Gymnasium LunarLander-v3 (discrete, 1000-step limit)",
    pool_size=8,
    video_fps=30,
    probe_stride=5,
    input_hint="the state is LunarLander's 8 numbers; export with an input of shape (1, 8)",
    output_hint="export the actor only: its output is the 4 action probabilities (or logits)",
    notebook="grader.notebook.lunarlander",
)
