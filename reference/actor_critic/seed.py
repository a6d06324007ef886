"""The ``seed`` actor-critic: the course notebook's algorithm, in plain PyTorch.

One shared 32-unit ReLU layer with a softmax actor head and a value head; one episode per update;
discounted returns (gamma 0.99) normalised over the episode; actor loss ``-log pi(a|s) * (G - V)``
with ``V`` detached; Huber critic loss; two Adam optimisers as in the notebook (lr 5e-3 for the
shared layer + actor head, lr 1e-3 for the shared layer + critic head). Training stops when the
running reward (``0.05 * episode + 0.95 * running``) passes 250, or at the time budget.

Speed-up without changing the algorithm: actions are sampled with a no-grad forward pass; at the
end of the episode one batched forward pass over the episode's states rebuilds the graph. The
weights do not change during an episode, so the losses and gradients are the notebook's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.tasks.contract import make_env, play_episode
from grader.tasks.lunarlander import TASK as LUNARLANDER
from reference.common import Progress, arg, plot_curves, save_checkpoint, save_json, seed_everything

OBS, N_ACTIONS = LUNARLANDER.state_shape[0], LUNARLANDER.n_actions
EPS = float(np.finfo(np.float32).eps)


@dataclass
class Args:
    out: str = arg("runs/lunarlander_seed", "run directory")
    minutes: float = arg(25.0, "wall-time budget (minutes)")
    seed: int = arg(42, "seed of torch/numpy and of the training episodes (the notebook's 42)")
    gamma: float = arg(0.99, "discount factor")
    hidden: int = arg(32, "units of the shared ReLU layer")
    actor_lr: float = arg(5e-3, "Adam lr of the shared layer + actor head")
    critic_lr: float = arg(1e-3, "Adam lr of the shared layer + critic head")
    solved: float = arg(250.0, "stop when the running reward passes this")
    max_episodes: int = arg(0, "stop after this many episodes (0: no limit)")


class SharedActorCritic(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.common = nn.Linear(OBS, hidden)
        self.action = nn.Linear(hidden, N_ACTIONS)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.common(x))
        return torch.softmax(self.action(h), dim=-1), self.critic(h).squeeze(-1)


class ProbabilityActor(nn.Module):
    """The exported policy: state [b, 8] -> softmax probabilities [b, 4] (the notebook's actor_model)."""

    def __init__(self, net: SharedActorCritic):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def discounted_returns(rewards: list[float], gamma: float) -> np.ndarray:
    out = np.zeros(len(rewards))
    acc = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return (out - out.mean()) / (out.std() + EPS)


def train(args: Args) -> tuple[nn.Module, dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "args.json", asdict(args))
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    net = SharedActorCritic(args.hidden)
    actor_params = [*net.common.parameters(), *net.action.parameters()]
    critic_params = [*net.common.parameters(), *net.critic.parameters()]
    actor_opt = torch.optim.Adam(actor_params, lr=args.actor_lr)
    critic_opt = torch.optim.Adam(critic_params, lr=args.critic_lr)
    env = make_env(LUNARLANDER)
    hist = {"episode": [], "return": [], "running": [], "loss_actor": [], "loss_critic": [], "time": [], "steps": []}
    running, episode, steps = 0.0, 0, 0
    start = time.monotonic()
    cpu_start = time.process_time()
    budget = args.minutes * 60
    with Progress(budget, "course actor-critic (seconds)") as progress:
        while time.monotonic() - start < budget:
            gen = play_episode(LUNARLANDER, env, (args.seed * 100_003 + episode) % 1_000_000)
            turn = next(gen)
            states, actions, rewards = [], [], []
            while not turn.done:
                with torch.no_grad():
                    probs, _ = net(torch.from_numpy(turn.state)[None])
                p = probs[0].numpy().astype(np.float64)
                a = int(rng.choice(N_ACTIONS, p=p / p.sum()))
                states.append(turn.state), actions.append(a)
                turn = gen.send(a)
                rewards.append(turn.reward)
            steps += turn.length
            running = 0.05 * turn.episode_return + 0.95 * running
            # The update: one batched forward pass over the episode (same weights as when acting).
            probs, values = net(torch.from_numpy(np.stack(states)))
            log_probs = torch.log(probs.gather(1, torch.tensor(actions)[:, None]).squeeze(1))
            returns = torch.as_tensor(discounted_returns(rewards, args.gamma), dtype=torch.float32)
            actor_loss = (-log_probs * (returns - values.detach())).sum()
            critic_loss = F.huber_loss(values, returns, reduction="sum", delta=1.0)
            # Both gradients at the weights the episode was played with, then the notebook's two
            # steps (critic, then actor); the shared layer gets one step from each optimiser.
            critic_grads = torch.autograd.grad(critic_loss, critic_params, retain_graph=True)
            actor_grads = torch.autograd.grad(actor_loss, actor_params)
            for opt, params, grads in ((critic_opt, critic_params, critic_grads),
                                       (actor_opt, actor_params, actor_grads)):
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
            episode += 1
            elapsed = time.monotonic() - start
            for k, v in (("episode", episode), ("return", turn.episode_return), ("running", running),
                         ("loss_actor", actor_loss.item()), ("loss_critic", critic_loss.item()),
                         ("time", elapsed), ("steps", steps)):
                hist[k].append(v)
            progress.update(elapsed - progress.done, episode=episode, running=running, steps=steps)
            if running > args.solved or (args.max_episodes and episode >= args.max_episodes):
                break
    hist["wall_seconds"] = time.monotonic() - start
    hist["cpu_seconds"] = time.process_time() - cpu_start  # one-core equivalent, whatever the load
    hist["solved"] = running > args.solved
    save_checkpoint(out / "model.pt", {"model": net.state_dict(), "args": asdict(args)})
    e = hist["episode"]
    plot_curves(out / "curves.png", {
        "episode return": (e, hist["return"]),
        "running reward": (e, hist["running"]),
        "actor loss": (e, hist["loss_actor"]),
        "critic loss": (e, hist["loss_critic"]),
    }, title="course actor-critic on LunarLander-v3 (x: episode)", smooth=20)
    return ProbabilityActor(net), hist
