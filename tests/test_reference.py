"""Tests of the reference agents: tiny training runs export ONNX files that follow the task
contracts, and the agents use the grader's own contract functions (by identity, not copies)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import grader.tasks.contract as contract  # noqa: E402
import grader.tasks.mspacman as mspacman_task  # noqa: E402
from grader.tasks.lunarlander import TASK as LUNARLANDER  # noqa: E402
from grader.tasks.mspacman import TASK as MSPACMAN  # noqa: E402


def _check_onnx(path, spec, batch=3):
    """Contract shapes, float32, batch-independent outputs; returns the session."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert list(inp.shape[1:]) == list(spec.state_shape)
    assert inp.type == "tensor(float)" and out.type == "tensor(float)"
    assert not isinstance(inp.shape[0], int)  # a dynamic batch axis
    rng = np.random.default_rng(1)
    scale = 255.0 if spec is MSPACMAN else 1.0
    x = (rng.random((batch, *spec.state_shape)) * scale).astype(np.float32)
    y = sess.run(None, {inp.name: x})[0]
    assert y.shape == (batch, spec.n_actions) and y.dtype == np.float32
    singles = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(batch)])
    np.testing.assert_allclose(singles, y, rtol=1e-4, atol=1e-5)
    return sess


def _play_one(path, spec, seed):
    """One episode of the exported file through the contract's protocol; returns the final turn."""
    from reference.common import OnnxPolicy

    policy = OnnxPolicy(path, spec)
    env = contract.make_env(spec)
    try:
        gen = contract.play_episode(spec, env, seed)
        turn = next(gen)
        while not turn.done:
            turn = gen.send(int(policy(turn.state[None])[0]))
    finally:
        env.close()
    assert turn.length > 0 and np.isfinite(turn.episode_return)
    return turn


def _passes_every_grader_check(path, spec, seed, out=None):
    """The grader itself: every check passes and an episode is played."""
    from grader.api import grade

    result = grade(path, task=spec.name, seeds=[seed], workers=1, video=False, report=False,
                   out=out or path.parent / "grading")
    # a tiny run plays at random level: the random_level warning is about the play, not the model
    failed = [c for c in result.checks if not c.passed and c.severity != "note" and c.name != "random_level"]
    assert result.status == "graded" and not failed, (result.error, failed)
    assert len(result.episodes) == 1


def test_reference_uses_the_contract_functions_by_identity():
    import reference.actor_critic.improved as improved
    import reference.actor_critic.seed as seed
    import reference.common as common
    import reference.dqn.train as dqn
    import reference.strong.train as strong

    assert dqn.preprocess_frames is mspacman_task.preprocess_frames
    assert dqn.play_episode is contract.play_episode
    assert dqn.make_env is contract.make_env
    assert dqn.MSPACMAN is mspacman_task.TASK
    assert strong.play_episode is contract.play_episode and strong.make_env is contract.make_env
    assert strong.MSPACMAN is mspacman_task.TASK
    for module in (seed, improved):
        assert module.play_episode is contract.play_episode
        assert module.make_env is contract.make_env
        assert module.LUNARLANDER is LUNARLANDER
    assert common.play_episode is contract.play_episode
    assert common.actions_from_output is contract.actions_from_output


def test_dqn_replay_memory_rebuilds_next_states():
    from reference.dqn.train import ReplayMemory

    mem = ReplayMemory(4)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 44, 40)).astype(np.float32)
    for t in range(6):  # wraps around the ring
        s, s2 = frames[t:t + 5], frames[t + 1:t + 6]
        mem.push(s, t % 5, s2, float(t), t == 5)
    assert len(mem) == 4
    states, actions, next_states, rewards, dones = mem.sample(32, rng)
    for s, s2, r in zip(states, next_states, rewards):
        t = int(r)
        np.testing.assert_array_equal(s, frames[t:t + 5])
        np.testing.assert_array_equal(s2, frames[t + 1:t + 6])


def test_dqn_reward_shaping_is_the_lessons():
    from reference.dqn.train import Args, shape_reward

    a = Args()
    assert shape_reward(10, False, False, a) == pytest.approx(1 / 3)
    assert shape_reward(0, True, False, a) == pytest.approx(-0.43)
    assert shape_reward(1000, False, True, a) == pytest.approx(11.0)


@pytest.mark.slow
def test_dqn_tiny_run_exports_a_contract_model(tmp_path):
    from reference.dqn.train import Args, train

    args = Args(steps=250, out=str(tmp_path / "run"), batch_size=16, learning_starts=64, memory_size=400,
                target_update=100, eval_episodes=0, save_replay=True)
    train(args)
    # --resume continues from the checkpoint (step counter, replay memory).
    args.steps, args.resume = 300, True
    train(args)
    from reference.common import load_checkpoint

    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["step"] == 300
    onnx_path = tmp_path / "dqn.onnx"
    from reference.dqn.__main__ import main

    main(["export", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(onnx_path)])
    _check_onnx(onnx_path, MSPACMAN)
    _play_one(onnx_path, MSPACMAN, seed=1_000_000)
    _passes_every_grader_check(onnx_path, MSPACMAN, seed=1_000_000)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_seed_actor_critic_tiny_run_exports_a_contract_model(tmp_path):
    from reference.actor_critic.__main__ import main

    out = tmp_path / "seed"
    main(["--flavour", "seed", "--out", str(out), "--max-episodes", "5", "--eval-episodes", "2"])
    sess = _check_onnx(out / "model.onnx", LUNARLANDER)
    probs = sess.run(None, {sess.get_inputs()[0].name: np.zeros((4, 8), np.float32)})[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # softmax probabilities, as the course
    _play_one(out / "model.onnx", LUNARLANDER, seed=1_000_000)
    _passes_every_grader_check(out / "model.onnx", LUNARLANDER, seed=1_000_000)


def test_improved_actor_critic_tiny_run_exports_a_contract_model(tmp_path):
    from reference.actor_critic.__main__ import main

    out = tmp_path / "ppo"
    main(["--flavour", "improved", "--out", str(out), "--total-steps", "1024", "--n-envs", "4",
          "--n-steps", "128", "--epochs", "2", "--minibatches", "2", "--eval-episodes", "2",
          "--validate-every", "1"])
    sess = _check_onnx(out / "model.onnx", LUNARLANDER)
    probs = sess.run(None, {sess.get_inputs()[0].name: np.zeros((4, 8), np.float32)})[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    _play_one(out / "model.onnx", LUNARLANDER, seed=1_000_001)
    _passes_every_grader_check(out / "model.onnx", LUNARLANDER, seed=1_000_001)


def test_strong_dqn_n_step_transitions():
    from reference.strong.train import NStepCollector, NStepReplay

    memory = NStepReplay(10)
    c = NStepCollector(3, 0.5, memory)
    frames = [np.full((5, 44, 40), i, np.uint8) for i in range(7)]
    for t, r in enumerate([1.0, 2.0, 4.0, 8.0]):  # s0..s3 -> s4, no terminal
        c.add(frames[t], t % 5, r, frames[t + 1], False)
    assert len(memory) == 2  # (s0, 1 + 0.5*2 + 0.25*4, s3) and (s1, 2 + 0.5*4 + 0.25*8, s4)
    np.testing.assert_allclose(memory.returns[:2], [3.0, 6.0])
    np.testing.assert_allclose(memory.discounts[:2], [0.125, 0.125])
    assert memory.next_states[0, 0, 0, 0] == 3 and memory.next_states[1, 0, 0, 0] == 4
    c.add(frames[4], 4, 16.0, frames[5], True)  # a terminal flushes s2, s3, s4 without bootstrap
    assert len(memory) == 5 and not c.pending
    np.testing.assert_allclose(memory.returns[2:5], [4 + 4 + 4, 8 + 8, 16])
    np.testing.assert_allclose(memory.discounts[2:5], 0.0)
    assert list(memory.actions[:5]) == [0, 1, 2, 3, 4]


def test_strong_dqn_tiny_run_resumes_and_exports_a_contract_model(tmp_path):
    from reference.common import load_checkpoint
    from reference.strong.__main__ import main

    run = tmp_path / "run"
    common = ["--out", str(run), "--n-envs", "2", "--batch-size", "8", "--learning-starts", "32",
              "--memory-size", "200", "--target-update", "16", "--channels", "4,4,4", "--hidden", "8",
              "--val-episodes", "1", "--validate-minutes", "60", "--save-replay"]
    main([*common, "--total-steps", "64"])
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["step"] == 64 and 0 < ck["updates"] <= 8 and len(ck["history"]["val_mean"]) == 1
    # --resume continues from the checkpoint: nets, optimizer, counters, history, replay, RNG states.
    main([*common, "--total-steps", "128", "--resume"])
    ck2 = load_checkpoint(run / "checkpoint.pt")
    assert ck2["step"] == 128 and ck2["updates"] == ck["updates"] + 16 and ck2["episode"] >= ck["episode"]
    assert len(ck2["history"]["val_mean"]) == 2 and ck2["history"]["step"][:1] == ck["history"]["step"]
    assert (run / "best.onnx").exists() and (run / "curves.png").stat().st_size > 0
    _check_onnx(run / "best.onnx", MSPACMAN)
    onnx_path = tmp_path / "strong.onnx"
    main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(onnx_path),
          "--curve", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").stat().st_size > 0
    _check_onnx(onnx_path, MSPACMAN, batch=5)
    _play_one(onnx_path, MSPACMAN, seed=1_000_002)
    _passes_every_grader_check(onnx_path, MSPACMAN, seed=1_000_002)


@pytest.mark.parametrize("name", ["lunarlander_improved", "lunarlander_seed", "mspacman_dqn", "mspacman_strong"])
def test_shipped_models_follow_the_contract(name, tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "reference" / "models" / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path.name} not trained yet")
    spec = MSPACMAN if name.startswith("mspacman") else LUNARLANDER
    _check_onnx(path, spec)
    _passes_every_grader_check(path, spec, seed=0, out=tmp_path)
    assert (path.with_suffix(".md")).exists(), "every shipped model has a model card"
