"""Task ``cartpole``: Gymnasium ``CartPole-v1``, the smallest homework (and the proof that a task
is one module).

Default arguments, the registered 500-step limit; the episode is reset with its seed; "solved"
is a return of 475. Policy: float32 ``[batch, 4]`` -> ``[batch, 2]`` (argmax) or an int64 action.
"""

from __future__ import annotations

from grader.tasks.base import Task

TASK = Task(
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
)
