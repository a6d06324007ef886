"""The ``improved`` actor-critic for LunarLander: PPO with GAE (Schulman et al. 2017).

Everything the course notebook lists as "improvements" is here: separate actor and critic
networks (64-64 tanh MLPs), an entropy bonus, gradient-norm clipping, vectorised environments
(a plain list of ``n_envs`` Gymnasium envs stepped in lockstep, auto-reset by hand), and a modern
update (clipped PPO objective, GAE(lambda) advantages, several epochs of minibatches per rollout,
learning rate annealed linearly to 0 over the step or time budget, whichever runs out first).

Training episodes are played through :func:`grader.tasks.contract.play_episode`, seeded from
``seed * 100_003 + episode`` (mod 1_000_000), so training never sees the held-out seeds
1_000_000.. used to score the model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from grader.tasks.contract import make_env, play_episode
from grader.tasks.lunarlander import TASK as LUNARLANDER
from reference.common import (
    Progress,
    arg,
    evaluate,
    plot_curves,
    save_checkpoint,
    save_json,
    seed_everything,
    summary,
)

OBS, N_ACTIONS = LUNARLANDER.state_shape[0], LUNARLANDER.n_actions


@dataclass
class Args:
    out: str = arg("runs/lunarlander_improved", "run directory")
    minutes: float = arg(10.0, "time budget of the training loop (minutes, see --clock)")
    clock: str = arg("wall", "what --minutes measures: wall time, or this process's CPU time (the fair "
                     "one-core measure on a shared, busy machine)", choices=["wall", "cpu"])
    seed: int = arg(1, "seed of torch/numpy and of the training episodes")
    total_steps: int = arg(2_000_000, "env-step budget; the learning rate anneals to 0 over it (or the time)")
    n_envs: int = arg(16, "environments stepped in lockstep")
    n_steps: int = arg(256, "steps per env per rollout (rollout = n_envs * n_steps transitions)")
    epochs: int = arg(10, "passes over each rollout")
    minibatches: int = arg(8, "minibatches per pass")
    lr: float = arg(3e-4, "Adam learning rate at the start (linear annealing to 0)")
    gamma: float = arg(0.999, "discount factor")
    gae_lambda: float = arg(0.98, "GAE lambda")
    clip: float = arg(0.2, "PPO ratio clipping")
    ent_coef: float = arg(0.01, "entropy bonus coefficient")
    vf_coef: float = arg(0.5, "value loss coefficient")
    max_grad_norm: float = arg(0.5, "gradient-norm clipping")
    hidden: int = arg(64, "hidden units per layer (two tanh layers, actor and critic each)")
    validate_every: int = arg(0, "greedy validation on 20 seeds every this many updates; keeps the best (0: off)")


def mlp(n_in: int, n_out: int, hidden: int, out_gain: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                        nn.Linear(hidden, n_out))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=np.sqrt(2))
            nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(net[-1].weight, gain=out_gain)
    return net


class ActorCritic(nn.Module):
    """Separate actor (logits) and critic (value) MLPs."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.actor = mlp(OBS, N_ACTIONS, hidden, 0.01)
        self.critic = mlp(OBS, 1, hidden, 1.0)


class SoftmaxActor(nn.Module):
    """The exported policy: state [b, 8] -> action probabilities [b, 4] (the course's output)."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.actor(x), dim=-1)


class VecEpisodes:
    """``n`` LunarLander envs in lockstep, each playing seeded contract episodes back to back."""

    def __init__(self, n: int, seed: int):
        self.envs = [make_env(LUNARLANDER) for _ in range(n)]
        self.seed, self.episode = seed, 0
        self.gens, self.turns = [], []
        for env in self.envs:
            gen = self._start(env)
            self.gens.append(gen)
            self.turns.append(next(gen))
        self.finished: list[float] = []  # returns of episodes finished since last read

    def _start(self, env):
        gen = play_episode(LUNARLANDER, env, (self.seed * 100_003 + self.episode) % 1_000_000)
        self.episode += 1
        return gen

    def states(self) -> np.ndarray:
        return np.stack([t.state for t in self.turns])

    def step(self, actions: np.ndarray):
        """Returns rewards, terminal flags (no bootstrap), truncation flags and the final states
        of truncated episodes (to bootstrap from); finished episodes restart at once."""
        n = len(self.envs)
        rewards = np.zeros(n, np.float32)
        terminal = np.zeros(n, np.float32)
        truncated = np.zeros(n, bool)
        final = np.zeros((n, OBS), np.float32)
        for i, a in enumerate(actions):
            turn = self.gens[i].send(int(a))
            rewards[i] = turn.reward
            if turn.done:
                self.finished.append(turn.episode_return)
                # LunarLander ends by a crash/landing/leaving (terminal) or the 1000-step limit.
                if turn.length >= 1000 and self.envs[i].unwrapped.lander.awake:
                    truncated[i], final[i] = True, turn.state
                else:
                    terminal[i] = 1.0
                self.gens[i] = self._start(self.envs[i])
                turn = next(self.gens[i])
            self.turns[i] = turn
        return rewards, terminal, truncated, final


def train(args: Args) -> tuple[nn.Module, dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "args.json", asdict(args))
    seed_everything(args.seed)
    model = ActorCritic(args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-5)
    vec = VecEpisodes(args.n_envs, args.seed)
    n, T = args.n_envs, args.n_steps
    batch = n * T
    mb = batch // args.minibatches
    obs_buf = torch.zeros((T, n, OBS))
    act_buf = torch.zeros((T, n), dtype=torch.long)
    logp_buf = torch.zeros((T, n))
    val_buf = torch.zeros((T, n))
    rew_buf = np.zeros((T, n), np.float32)
    term_buf = np.zeros((T, n), np.float32)
    hist = {"step": [], "return": [], "time": [], "update_step": [], "loss_pi": [], "loss_v": [],
            "entropy": [], "lr": [], "val_step": [], "val_mean": []}
    budget = args.minutes * 60
    start = time.monotonic()
    cpu_start = time.process_time()
    step, update, best = 0, 0, (-np.inf, None)

    def used() -> float:  # seconds of the budget used so far
        return time.process_time() - cpu_start if args.clock == "cpu" else time.monotonic() - start
    with Progress(args.total_steps, "PPO LunarLander") as progress:
        while step < args.total_steps and used() < budget:
            frac = max(step / args.total_steps, used() / budget)
            lr = args.lr * max(1.0 - frac, 0.0)
            for g in opt.param_groups:
                g["lr"] = lr
            # --- rollout ---
            obs = torch.from_numpy(vec.states())
            with torch.no_grad():
                for t in range(T):
                    logits = model.actor(obs)
                    dist = torch.distributions.Categorical(logits=logits)
                    a = dist.sample()
                    obs_buf[t], act_buf[t] = obs, a
                    logp_buf[t] = dist.log_prob(a)
                    val_buf[t] = model.critic(obs).squeeze(-1)
                    r, term, trunc, final = vec.step(a.numpy())
                    if trunc.any():  # bootstrap a time-limit cut from the value of its last state
                        r = r + args.gamma * trunc * model.critic(torch.from_numpy(final)).squeeze(-1).numpy()
                    rew_buf[t], term_buf[t] = r, np.maximum(term, trunc)
                    obs = torch.from_numpy(vec.states())
                last_val = model.critic(obs).squeeze(-1).numpy()
            step += batch
            # --- GAE ---
            vals = val_buf.numpy()
            adv = np.zeros((T, n), np.float32)
            gae = np.zeros(n, np.float32)
            for t in reversed(range(T)):
                nxt = last_val if t == T - 1 else vals[t + 1]
                nonterm = 1.0 - term_buf[t]
                delta = rew_buf[t] + args.gamma * nxt * nonterm - vals[t]
                gae = delta + args.gamma * args.gae_lambda * nonterm * gae
                adv[t] = gae
            b_adv = torch.from_numpy(adv).reshape(-1)
            b_ret = b_adv + val_buf.reshape(-1)
            b_obs, b_act, b_logp = obs_buf.reshape(-1, OBS), act_buf.reshape(-1), logp_buf.reshape(-1)
            # --- PPO epochs ---
            for _ in range(args.epochs):
                perm = torch.randperm(batch)
                for k in range(0, batch, mb):
                    idx = perm[k:k + mb]
                    dist = torch.distributions.Categorical(logits=model.actor(b_obs[idx]))
                    ratio = torch.exp(dist.log_prob(b_act[idx]) - b_logp[idx])
                    a_ = b_adv[idx]
                    a_ = (a_ - a_.mean()) / (a_.std() + 1e-8)
                    loss_pi = -torch.min(ratio * a_, ratio.clamp(1 - args.clip, 1 + args.clip) * a_).mean()
                    loss_v = 0.5 * ((model.critic(b_obs[idx]).squeeze(-1) - b_ret[idx]) ** 2).mean()
                    entropy = dist.entropy().mean()
                    loss = loss_pi + args.vf_coef * loss_v - args.ent_coef * entropy
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    opt.step()
            update += 1
            elapsed = time.monotonic() - start
            for ret in vec.finished:
                hist["step"].append(step), hist["return"].append(ret), hist["time"].append(elapsed)
            vec.finished.clear()
            for k, v in (("update_step", step), ("loss_pi", loss_pi.item()), ("loss_v", loss_v.item()),
                         ("entropy", entropy.item()), ("lr", lr)):
                hist[k].append(v)
            if args.validate_every and update % args.validate_every == 0:
                vr = evaluate(greedy(model), LUNARLANDER, range(900_000, 900_020)).mean()
                hist["val_step"].append(step), hist["val_mean"].append(float(vr))
                if vr > best[0]:
                    best = (float(vr), {k: v.clone() for k, v in model.state_dict().items()})
            avg = float(np.mean(hist["return"][-100:])) if hist["return"] else float("nan")
            progress.update(batch, avg100=avg, entropy=entropy.item(), lr=lr,
                            episodes=len(hist["return"]), minutes=elapsed / 60)
    hist["wall_seconds"] = time.monotonic() - start
    hist["cpu_seconds"] = time.process_time() - cpu_start  # one-core equivalent, whatever the load
    hist["steps"] = step
    if best[1] is not None:
        hist["final_validation"] = float(evaluate(greedy(model), LUNARLANDER, range(900_000, 900_020)).mean())
        if best[0] > hist["final_validation"]:
            model.load_state_dict(best[1])
        hist["best_validation"] = best[0]
    save_checkpoint(out / "model.pt", {"model": model.state_dict(), "args": asdict(args)})
    plot_curves(out / "curves.png", {
        "episode return (training, stochastic)": (hist["step"], hist["return"]),
        "greedy validation (20 seeds)": (hist["val_step"], hist["val_mean"]),
        "policy loss": (hist["update_step"], hist["loss_pi"]),
        "value loss": (hist["update_step"], hist["loss_v"]),
        "entropy": (hist["update_step"], hist["entropy"]),
        "learning rate": (hist["update_step"], hist["lr"]),
    }, title="PPO on LunarLander-v3 (x: env steps)", smooth=50)
    return SoftmaxActor(model.actor), hist


def greedy(model: ActorCritic):
    def act(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.actor(torch.as_tensor(states, dtype=torch.float32)).argmax(-1).numpy()
    return act


__all__ = ["Args", "train", "summary"]
