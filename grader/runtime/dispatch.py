"""Which worker plays which seed: how many environments a fresh worker builds
(:func:`fresh_envs`) and the scheduler of one evaluation (:class:`Dispatch`)."""

from __future__ import annotations

from collections import deque


def worker_count(requested: int, episodes: int | None = None) -> int:
    """How many workers play ``episodes`` episodes: the ``requested`` number, no more than there
    are episodes (a worker without a seed would only cost its start), and at least one."""
    return max(1, requested if episodes is None else min(requested, episodes))


def fresh_envs(pool: int, episodes: int, n_workers: int) -> int:
    """How many environments a worker with none should build to play its share of ``episodes``:
    the pool, but no more than its share (one that plays no episode is not built).

    Each is built ready for the first seed it plays (:meth:`grader.runtime.engine.Engine.prepare` tells
    the worker its first seeds): for MsPacman its construction is that episode's seeded reset, so
    an environment that plays costs nothing extra, and a fuller batch makes each state's model call
    cheaper; the whole pool is therefore worth building (figures: ``docs/engine.md``). A
    long-lived worker (``grade batch``, the site) keeps its environments and adds one per command
    up to the pool (:class:`grader.runtime.episodes.EnvPool`)."""
    share = -(-episodes // max(1, n_workers))
    return max(1, min(pool, share))


class Dispatch:
    """Which worker plays which seed in one :meth:`Engine.evaluate`, and which one rechecks.

    Each worker starts with as many seeds as a fresh worker builds environments
    (:func:`fresh_envs`: the pool, at most its share), plus a reserve of one when there are many
    (which spares it a round trip per episode), and gets the next seed of the queue when one of
    its episodes ends; when the queue is empty every worker still waiting is told so. A worker
    never holds more seeds than it has environments (and the reserve), so that no seed waits on a
    busy worker while another is idle.

    The reproducibility check (``recheck``): every worker keeps the states and actions of the
    first episode it finishes, and the first worker to finish computes that episode's decisions
    again, one state per call (``recheck`` command, :func:`grader.runtime.episodes.recheck`), while the
    others play their last episodes: the check costs model calls only, no environment steps, and
    overlaps the end of the episodes (why not a re-play: ``docs/decisions.md``).

    The methods return the messages to send, as ``(worker, kind, args)``; ``state`` says what
    each worker is doing (``"episodes"``, ``"recheck"`` or ``"done"``)."""

    def __init__(self, seeds: list[int], n_workers: int, pool: int, *, recheck: bool):
        self.queue = deque(seeds)
        self.n, self.pool = n_workers, pool
        self.reserve = 1 if len(seeds) >= 4 * n_workers * pool else 0
        self.fresh = fresh_envs(pool, len(seeds), n_workers)
        self.recheck = recheck and pool > 1
        self.rechecking = False
        self.state: dict[int, str] = {}
        self.given: dict[int, int] = {}  # seeds each worker was given to play in its pool
        self.fed: set[int] = set()  # workers that may still be sent seeds

    def hand(self) -> dict[int, list[int]]:
        """The seeds each worker starts with, dealt in turn (the queue is left as it is)."""
        dealt = list(self.queue)[: self.n * (self.fresh + self.reserve)]
        return {i: dealt[i::self.n] for i in range(self.n)}

    def start(self) -> list[tuple[int, str, dict]]:
        first = self.hand()
        for _ in range(sum(len(v) for v in first.values())):
            self.queue.popleft()
        return [self._episodes(i, first[i]) for i in range(self.n) if first[i]]

    def freed(self, i: int) -> list[tuple[int, str, dict]]:
        """Worker ``i`` finished an episode of its pool: the next seed, or the end for everyone."""
        if i not in self.fed:
            return []
        if self.queue:
            self.given[i] += 1
            seed = self.queue.popleft()
            if self.queue:
                return [(i, "seeds", {"seeds": [seed], "end": False})]
            self.fed.discard(i)
            return [(i, "seeds", {"seeds": [seed], "end": True})] + self._end_all()
        return self._end_all()

    def finished(self, i: int, results: dict[int, tuple[float, int]]) -> list[tuple[int, str, dict]]:
        """Worker ``i`` answered its command: what it does next (nothing: it is done)."""
        was, self.state[i] = self.state[i], "done"
        if was == "episodes" and self.recheck and not self.rechecking and results and not self.alone():
            self.rechecking, self.state[i] = True, "recheck"
            return [(i, "recheck", {})]
        return []

    def alone(self) -> bool:
        """Every episode was played one state per call, as a re-run would play it."""
        return self.pool == 1 or all(k == 1 for k in self.given.values())

    def _episodes(self, i: int, seeds: list[int]) -> tuple[int, str, dict]:
        self.state[i] = "episodes"
        self.given[i] = len(seeds)
        if self.queue:
            self.fed.add(i)
        return i, "episodes", {"seeds": seeds, "envs": min(self.pool, len(seeds) + len(self.queue)), "more": bool(self.queue),
                               "fresh_envs": self.fresh, "trace": self.recheck}

    def _end_all(self) -> list[tuple[int, str, dict]]:
        out = [(j, "seeds", {"seeds": [], "end": True}) for j in sorted(self.fed)]
        self.fed.clear()
        return out
