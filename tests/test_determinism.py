"""Per-episode returns depend only on the model and the seed: not on workers, pools or order."""

import onnx_fixtures as F
import pytest

from grader.api import grade
from grader.runtime.engine import Engine


def test_same_returns_with_one_and_two_workers(tmp_path):
    path = F.mlp(tmp_path / "m.onnx", hidden=32, scale=2.0)
    results = [grade(path, seeds=range(20, 36), workers=w, out=tmp_path / f"o{w}", video=False, report=False) for w in (1, 2)]
    one, two = ([(e.seed, e.return_, e.length) for e in r.episodes] for r in results)
    assert one == two
    assert len({r for _, r, _ in one}) > 1  # a real spread of returns, not a constant
    assert results[0].summary == results[1].summary


def test_same_returns_whatever_the_pool_size_and_seed_order(tmp_path):
    path = F.mlp(tmp_path / "m.onnx", hidden=32, scale=2.0)
    seeds = list(range(8))
    with Engine(1) as engine:
        engine.load(open(path, "rb").read(), task="lunarlander")
        by_pool = [engine.evaluate(seeds, pool_size=p) for p in (1, 3, 8)]
        reversed_order = engine.evaluate(seeds[::-1], pool_size=3)
    assert by_pool[0] == by_pool[1] == by_pool[2]
    assert reversed_order == by_pool[0]


def _static_dispatch(model: bytes, task: str, seeds: list[int], workers: int) -> dict:
    """The previous dispatch, in this process: seeds split up front, ``seeds[i::workers]`` for
    worker ``i``, each share played on its own pool of the task's size."""
    from grader.runtime.episodes import EnvPool, run_episodes
    from grader.runtime.policy import OnnxPolicy
    from grader.tasks.contract import get_task

    spec = get_task(task)
    policy = OnnxPolicy(model, spec)
    results = {}
    for i in range(workers):
        results.update(run_episodes(policy, spec, seeds[i::workers], envs=EnvPool().get(spec, spec.pool_size)))
    return results


def test_seeds_handed_out_as_workers_free_up_give_the_returns_of_the_static_split(tmp_path):
    """Dynamic dispatch (each worker takes the next seed when one of its episodes ends, with the
    reserve of a long run) gives, seed by seed, the returns of the split made up front."""
    from benchmarks import classgen as g

    model = g.heuristic_model(3, 1.2)  # landers, hoverers and crashers: very different lengths
    seeds = list(range(70))  # >= 4 x workers x pool for 1 and 2 workers: the reserve is used too
    reference = _static_dispatch(model, "lunarlander", seeds, 2)
    assert reference == _static_dispatch(model, "lunarlander", seeds, 1)
    assert len({n for _, n in reference.values()}) > 10  # episodes of many lengths
    for workers in (1, 2, 3):
        with Engine(workers) as engine:
            engine.load(model, task="lunarlander", episodes=len(seeds))
            got = engine.evaluate(seeds, recheck=True)
            assert list(got) == seeds  # keyed by seed, in the order asked
            assert got == reference, workers
            done = engine.last_recheck  # the reproducibility check, done during the tail
            assert done["differs"] is None and done["seed"] in seeds
            assert done["decisions"] == reference[done["seed"]][1]  # every decision of that episode
            assert engine.evaluate(seeds[:5]) == {s: reference[s] for s in seeds[:5]}  # few seeds: no reserve


def test_mspacman_same_returns_with_one_and_two_workers(tmp_path):
    path = F.conv_policy(tmp_path / "dqn.onnx")
    a = grade(path, seeds=[0, 1, 2], workers=1, out=tmp_path / "a", video=False, report=False)
    b = grade(path, seeds=[0, 1, 2], workers=2, out=tmp_path / "b", video=False, report=False)
    assert a.status == "graded"
    assert [(e.return_, e.length) for e in a.episodes] == [(e.return_, e.length) for e in b.episodes]


def test_random_policy_is_reproducible():
    with Engine(2) as engine:
        engine.load(None, task="lunarlander")
        first = engine.evaluate(range(6))
        second = engine.evaluate(range(6))
    assert first == second and len(set(first.values())) > 1


def test_a_hanging_model_is_killed_and_the_engine_recovers(tmp_path):
    """A model far too slow to answer (20 chained 1024x1024 products) hits the wall timeout."""
    from grader.errors import EngineFailure
    from grader.runtime.engine import Timeouts

    with Engine(1, timeouts=Timeouts(probe=1.0)) as engine:
        engine.load(F.slow_model_bytes(), task="lunarlander")
        with pytest.raises(EngineFailure, match="did not answer within 1 s"):  # the 1 s timeout, not the model, ended it
            engine.probe()
        engine.load(open(F.mlp(tmp_path / "ok.onnx"), "rb").read(), task="lunarlander")
        assert len(engine.evaluate([0, 1])) == 2  # a fresh worker took over


def test_a_batch_one_rerun_reproduces_the_scored_returns(tmp_path):
    from grader.submission import checks as C

    path = F.mlp(tmp_path / "m.onnx", hidden=32, scale=2.0)
    with Engine(2) as engine:
        engine.load(open(path, "rb").read(), task="lunarlander")
        scored = engine.evaluate(range(10))
        rerun = engine.rerun([0, 5, 9])
    assert rerun == {s: scored[s] for s in (0, 5, 9)}
    assert C.check_rerun(scored, rerun).passed


def test_decisions_computed_again_alone_prove_a_rerun_and_catch_a_batch_trap(tmp_path):
    """The recheck (one episode's decisions again, one state per call) agrees with an honest model,
    and says at which decision a model that reads its batch size went another way."""
    from test_hostile_models import batch_size_trap

    from grader.submission import checks as C

    honest = F.mlp(tmp_path / "m.onnx", hidden=32, scale=2.0)
    with Engine(2) as engine:
        engine.load(open(honest, "rb").read(), task="lunarlander")
        scored = engine.evaluate(range(20), recheck=True)
        done = engine.last_recheck
        assert done["differs"] is None and done["decisions"] == scored[done["seed"]][1]
        assert engine.rerun([done["seed"]]) == {done["seed"]: scored[done["seed"]]}  # what it proves, played out
        assert C.check_recheck(done).passed
    with Engine(1) as engine:
        engine.load(open(batch_size_trap(tmp_path / "trap.onnx", trigger=8), "rb").read(), task="lunarlander")
        engine.evaluate(range(8), recheck=True)  # 8 episodes: a pool of 8 (grader.runtime.engine.fresh_envs)
        done = engine.last_recheck
    decision, batched, alone = done["differs"]
    assert batched == 0 and alone != 0 and done["decisions"] == decision + 1  # the trap acts 0 in a batch of 8
    check = C.check_recheck(done, label=lambda s: f"episode {s + 1}")
    assert not check.passed and check.severity == "error"
    assert f"at its decision {decision + 1}" in check.message and "re-run alone, episode" in check.message and check.hint


def test_returns_that_a_batch_one_rerun_does_not_reproduce_fail_the_submission(tmp_path):
    """A model that acts differently at the pool size: its scored returns are not what it does alone."""
    from test_hostile_models import batch_size_trap

    from grader.submission import checks as C

    with Engine(1) as engine:
        engine.load(open(batch_size_trap(tmp_path / "trap.onnx", trigger=8), "rb").read(), task="lunarlander")
        scored = engine.evaluate(range(8))  # 8 episodes: a pool of 8 (grader.runtime.engine.fresh_envs)
        rerun = engine.rerun(range(8))
    check = C.check_rerun(scored, rerun, label=lambda s: f"episode {s + 1}")
    assert not check.passed and check.severity == "error"
    assert "re-run alone, episode" in check.message and check.hint


def test_a_fresh_worker_builds_its_pool_but_no_more_than_its_share_and_a_long_lived_one_grows_its_pool():
    from grader.runtime.dispatch import fresh_envs
    from grader.runtime.episodes import EnvPool
    from grader.tasks.contract import get_task

    assert [fresh_envs(4, 10, 2), fresh_envs(8, 100, 2), fresh_envs(4, 1, 2), fresh_envs(16, 5, 2)] == [4, 8, 1, 3]
    built = []
    pool = EnvPool(factory=lambda spec: built.append(spec.name) or object())
    spec = get_task("mspacman")
    sizes = []
    for _ in range(4):  # four gradings of a batch on the same worker
        n = pool.size_for(spec, slots=spec.pool_size, fresh=2)
        pool.get(spec, n)
        sizes.append(n)
    assert sizes == [2, 3, 4, 4] and len(built) == 4
    assert pool.size_for(spec, slots=1, fresh=2) == 1  # never more slots than seeds


def test_no_worker_holds_seeds_it_has_no_environment_for():
    """Each worker starts with at most as many seeds as it has environments (plus the reserve), so
    the rest of the queue goes to whoever frees a slot first; then one seed at a time."""
    from grader.runtime.dispatch import Dispatch, fresh_envs
    from grader.runtime.episodes import EnvPool
    from grader.tasks.contract import get_task

    plan = Dispatch(list(range(10)), 2, 4, recheck=False)
    assert [(i, a["seeds"]) for i, _, a in plan.start()] == [(0, [0, 2, 4, 6]), (1, [1, 3, 5, 7])]
    assert plan.freed(1) == [(1, "seeds", {"seeds": [8], "end": False})]
    assert plan.freed(1) == [(1, "seeds", {"seeds": [9], "end": True}), (0, "seeds", {"seeds": [], "end": True})]
    assert plan.freed(0) == [] and plan.given == {0: 4, 1: 6}
    spec = get_task("lunarlander")
    for n_seeds in (1, 3, 10, 33, 200):
        for workers in (1, 2, 3):
            for pool in (1, 4, 16):
                plan = Dispatch(list(range(n_seeds)), workers, pool, recheck=False)
                fresh = fresh_envs(pool, n_seeds, workers)
                built = EnvPool(factory=lambda spec, first_seed=None: object()).size_for(
                    spec, slots=min(pool, n_seeds), fresh=fresh)  # what a fresh worker builds
                assert all(len(seeds) <= built + plan.reserve for seeds in plan.hand().values())


def test_on_idle_is_called_once_while_the_last_episodes_still_run():
    from benchmarks import classgen as g

    model = g.heuristic_model(3, 1.2)  # landers, hoverers and crashers: very different lengths
    with Engine(2) as engine:
        engine.load(model, task="lunarlander")
        lengths = {s: n for s, (_, n) in engine.evaluate(range(30)).items()}
        short, long = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
        assert lengths[long] > lengths[short] + 300
        ended, at_idle = [], []
        engine.evaluate([short, long], on_episode=lambda s, r, n: ended.append(s),
                        on_idle=lambda: at_idle.append(list(ended)))
    assert at_idle == [[short]] and ended == [short, long]  # worker 0 idle, worker 1 still playing
