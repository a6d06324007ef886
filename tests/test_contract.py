"""The task contract: the MsPacman preprocessing and the lesson's episode protocol."""

import numpy as np
import pytest
import torch

from grader.tasks import contract
from grader.tasks.contract import actions_from_output, play_episode
from grader.tasks.mspacman import DEATH_STEPS, OPENING_STEPS, preprocess_frames


def lesson_preprocess(observation: np.ndarray) -> np.ndarray:
    """A plain transcription of the lesson's steps, in torch as the lesson does them."""
    obs = torch.tensor(observation, dtype=torch.uint8)
    obs = obs.float().mean(dim=2).type(torch.uint8)[1:171]
    border = torch.full((2, 160), 150)
    obs = torch.cat([border, obs, border])[1::4, 1::4]
    return obs.float().numpy()


@pytest.fixture(scope="module")
def real_frames():
    env = contract.make_env("mspacman")
    frames = []
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for t in range(400):
        obs, *_ = env.step(int(rng.integers(5)))
        if t % 40 == 0:
            frames.append(obs)
    env.close()
    return np.stack(frames)


def test_preprocessing_matches_the_lesson_on_real_frames(real_frames):
    ours = preprocess_frames(real_frames)
    assert ours.shape == (len(real_frames), 44, 40) and ours.dtype == np.float32
    for frame, mine in zip(real_frames, ours):
        np.testing.assert_array_equal(mine, lesson_preprocess(frame))


def test_preprocessing_matches_the_lesson_on_random_pixels():
    frames = np.random.default_rng(1).integers(0, 256, size=(6, 210, 160, 3), dtype=np.uint8)
    for frame, mine in zip(frames, preprocess_frames(frames)):
        np.testing.assert_array_equal(mine, lesson_preprocess(frame))


def test_preprocessing_rejects_wrong_frames():
    with pytest.raises(ValueError, match="210, 160, 3"):
        preprocess_frames(np.zeros((210, 160), np.uint8))


class ScriptedPacman:
    """A fake ALE env: records actions, loses a life at chosen steps, ends at ``end``."""

    def __init__(self, lose_life_at=(), end=10_000):
        self.actions, self.lose_life_at, self.end = [], set(lose_life_at), end

    def reset(self, seed=None):
        self.t, self.lives = 0, 3
        return self._frame(), {"lives": self.lives}

    def _frame(self):
        return np.full((210, 160, 3), self.t % 256, np.uint8)

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        if self.t in self.lose_life_at:
            self.lives -= 1
        return self._frame(), 1.0, self.t >= self.end, False, {"lives": self.lives}


def test_mspacman_protocol_opening_deaths_and_score():
    env = ScriptedPacman(lose_life_at={OPENING_STEPS + 1 + 3}, end=OPENING_STEPS + 1 + 3 + DEATH_STEPS + 5)
    episode = play_episode("mspacman", env, seed=0)
    turn = next(episode)
    assert env.actions == [3] * (OPENING_STEPS + 1)
    first = turn.state
    assert first.shape == (5, 44, 40) and all(np.array_equal(first[0], f) for f in first)
    states = [turn.state]
    while not turn.done:
        turn = episode.send(2)
        states.append(turn.state)
    policy_part = env.actions[OPENING_STEPS + 1:]
    assert policy_part[:3] == [2, 2, 2]
    assert policy_part[3:3 + DEATH_STEPS] == [0] * DEATH_STEPS  # NOOPs after the lost life
    assert policy_part[3 + DEATH_STEPS:] == [2] * 5
    # All rewards count, protocol steps included; the NOOP frames are not stacked.
    assert turn.episode_return == len(env.actions) == turn.length
    death_step = OPENING_STEPS + 1 + 3
    after_death = states[4]  # the fake frame at step t has every pixel equal to t
    assert after_death[-1][1, 1] == death_step + DEATH_STEPS + 1  # the first policy step after the NOOPs
    assert after_death[-2][1, 1] == death_step  # ... stacked right on the frame that lost the life


def test_mspacman_episode_ending_during_opening_ends_there():
    env = ScriptedPacman(end=10)
    turn = next(play_episode("mspacman", env, seed=0))
    assert turn.done and turn.length == 10 and len(env.actions) == 10


def test_lunarlander_episode_is_seeded():
    env = contract.make_env("lunarlander")
    returns = []
    for _ in range(2):
        episode = play_episode("lunarlander", env, seed=42)
        turn = next(episode)
        while not turn.done:
            turn = episode.send(0)
        returns.append((turn.episode_return, turn.length))
    assert returns[0] == returns[1]


@pytest.mark.parametrize("output, expected", [
    (np.array([[0.1, 0.5, 0.5, 0.2]], np.float32), [1]),  # first index on ties
    (np.array([3, 0], np.int64), [3, 0]),
    (np.array([[2]], np.int64), [2]),
])
def test_actions_from_output(output, expected):
    assert actions_from_output(output, 4).tolist() == expected


@pytest.mark.parametrize("output", [np.zeros((1, 5), np.float32), np.array([4], np.int64), np.zeros((1, 2, 4))])
def test_actions_from_output_rejects(output):
    with pytest.raises(ValueError):
        actions_from_output(output, 4)


# --- the shipped probe states (grader/submission/probestates.py) ------------------------------------------------
@pytest.mark.parametrize("name", __import__("grader.tasks", fromlist=["task_names"]).task_names())
def test_the_shipped_probe_states_are_a_fresh_rollout(name):
    """The shipped file is a cache of the rollout with the installed packages, never a second definition."""
    from grader.submission import probestates
    from grader.tasks import get_task

    spec = get_task(name)
    states = probestates.shipped(spec)
    assert states is not None, f"no usable {probestates.shipped_path(spec)}: run python -m grader.submission.probestates {name}"
    np.testing.assert_array_equal(states, probestates.rollout(spec),
                                  err_msg=f"stale probe states: run python -m grader.submission.probestates {name}")


def test_a_missing_or_bad_probe_states_file_falls_back_to_the_rollout(tmp_path, monkeypatch):
    from grader.submission import probestates
    from grader.tasks import get_task

    spec = get_task("lunarlander")
    fresh = probestates.rollout(spec)
    monkeypatch.setattr(probestates, "DATA_DIR", tmp_path)
    assert probestates.shipped(spec) is None  # missing
    path = probestates.shipped_path(spec)
    for bad in (np.zeros((3, 8), np.float32), np.zeros((16, 8), np.float64), np.full((16, 8), np.nan, np.float32)):
        np.savez(path, states=bad)
        assert probestates.shipped(spec) is None
    np.savez(path, states=np.array([{"x": 1}] * 16, dtype=object))  # needs pickle: refused
    assert probestates.shipped(spec) is None
    path.write_bytes(b"not a zip file")
    assert probestates.shipped(spec) is None
    np.testing.assert_array_equal(probestates.probe_states(spec), fresh)
    probestates.write(spec)
    np.testing.assert_array_equal(probestates.shipped(spec), fresh)


def _play(env, seed: int, actions) -> list:
    episode = play_episode("mspacman", env, seed)
    turn, turns = next(episode), []
    for action in actions:
        turns.append((turn.state.copy(), turn.reward, turn.done, turn.episode_return, turn.length))
        if turn.done:
            break
        turn = episode.send(int(action))
    return turns


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b))


def test_an_environment_built_for_its_first_seed_plays_that_episode_exactly_as_a_seeded_reset():
    """MsPacman's environment built with ``first_seed`` skips the second ROM load of its first
    episode; the episode (sticky actions included) is the same, state by state, and so is the next."""
    actions = np.random.default_rng(7).integers(0, 5, 3000)
    for seed, then in ((3, 2000004), (2000001, 11)):
        usual = contract.make_env("mspacman")
        ready = contract.make_env("mspacman", first_seed=seed)
        resets = []
        original = ready.reset
        ready.reset = lambda resets=resets, original=original, **kw: resets.append(kw.get("seed")) or original(**kw)
        assert _same(_play(usual, seed, actions), _play(ready, seed, actions))
        assert resets == [None]  # the ROM load was skipped: a plain reset
        assert _same(_play(usual, then, actions), _play(ready, then, actions))
        assert resets == [None, then]


def test_a_wrong_or_stale_first_seed_takes_the_usual_seeded_reset():
    actions = np.random.default_rng(8).integers(0, 5, 400)
    usual = _play(contract.make_env("mspacman"), 5, actions)
    assert _same(usual, _play(contract.make_env("mspacman", first_seed=6), 5, actions))  # built for another seed
    stepped = contract.make_env("mspacman", first_seed=5)
    stepped.reset()
    stepped.step(0)  # something ran since the load: it is no longer the state a seeded reset gives
    assert _same(usual, _play(stepped, 5, actions))


def test_the_environment_pool_builds_each_environment_for_the_seed_it_plays_first():
    from grader.runtime.episodes import EnvPool
    from grader.tasks.contract import get_task

    built = []
    pool = EnvPool(factory=lambda spec, first_seed=None: built.append(first_seed) or object())
    spec = get_task("mspacman")
    pool.expect(spec, [40, 41])
    pool.get(spec, 3)  # the third has no seed to expect
    pool.expect(spec, [50, 51, 52, 53])
    pool.get(spec, 4)  # environments 0-2 exist; the fourth plays seed 53 first
    assert built == [40, 41, None, 53]
