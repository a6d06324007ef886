"""The course lesson's DQN for MsPacman, in PyTorch, as one readable training script.

Algorithm (the lesson's): a convolutional Q-network on 5 stacked 44x40 grayscale frames, an
epsilon-greedy behaviour policy with exponential decay, a replay memory, a target network copied
every ``target_update`` steps, Huber (smooth L1) TD loss with the one-step target
``r + gamma * (1 - done) * max_a' Q_target(s', a')``, SGD with Nesterov momentum and element-wise
gradient clamping to [-1, 1], and the lesson's reward shaping (log base 1000 of a positive reward,
-0.43 when a life is lost, +10 when the game is won).

The environment, the frame preprocessing and the episode protocol (80 LEFT steps, 36 NOOP steps
after a lost life) are the grader's own: :func:`grader.tasks.contract.make_env`,
:func:`grader.tasks.mspacman.preprocess_frames` and :func:`grader.tasks.contract.play_episode`.

Usage::

    python -m reference.dqn --steps 500000 --out runs/dqn            # train
    python -m reference.dqn --steps 900000 --out runs/dqn --resume   # continue a run
    python -m reference.dqn export --checkpoint runs/dqn/best.pt --out model.onnx
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.tasks.contract import make_env, play_episode
from grader.tasks.mspacman import TASK as MSPACMAN, preprocess_frames  # noqa: F401  (re-exported)
from reference.common import (
    Progress,
    arg,
    evaluate,
    export_and_score,
    load_checkpoint,
    plot_curves,
    rng_state,
    save_checkpoint,
    save_json,
    seed_everything,
    set_rng_state,
    summary,
)

FRAMES, HEIGHT, WIDTH = MSPACMAN.state_shape
N_ACTIONS = MSPACMAN.n_actions
VALIDATION_SEED0 = 900_000  # greedy evaluations during training; held-out seeds start at 1_000_000


@dataclass
class Args:
    """Training arguments. Defaults are the lesson's values unless noted."""

    steps: int = arg(1_000_000, "total agent steps (policy decisions) to train for")
    device: str = arg("cpu", "torch device", choices=["cpu", "cuda"])
    out: str = arg("runs/dqn", "run directory: checkpoints, curves, metrics")
    resume: bool = arg(False, "continue from OUT/checkpoint.pt")
    seed: int = arg(1, "seed of torch/numpy and of the training episodes")
    batch_size: int = arg(128, "minibatch size of one optimisation step")
    gamma: float = arg(0.99, "discount factor")
    eps_start: float = arg(1.0, "initial epsilon")
    eps_end: float = arg(0.1, "final epsilon")
    eps_decay: float = arg(1_000_000, "time constant (steps) of epsilon's exponential decay")
    target_update: int = arg(8000, "copy the policy net into the target net every this many steps")
    lr: float = arg(2.5e-4, "SGD learning rate")
    momentum: float = arg(0.95, "SGD Nesterov momentum")
    memory_size: int = arg(12_000, "replay memory capacity (transitions)")
    train_every: int = arg(1, "one optimisation step every this many agent steps (lesson: 1)")
    learning_starts: int = arg(128, "start optimising when the memory holds this many transitions")
    reward_lose: float = arg(-0.43, "shaped reward added when a life is lost")
    reward_win: float = arg(10.0, "shaped reward added when the game ends with lives left")
    checkpoint_minutes: float = arg(20.0, "write a checkpoint (and a greedy evaluation) this often")
    eval_episodes: int = arg(10, "greedy validation episodes at each checkpoint (0: none)")
    save_replay: bool = arg(True, "store the replay memory with each checkpoint (OUT/replay.npz)")
    threads: int = arg(1, "torch CPU threads")


# --- network -------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """The lesson's network: [b, 5, 44, 40] frames (0..255) -> [b, 5] Q-values."""

    def __init__(self, n_frames: int = FRAMES, n_actions: int = N_ACTIONS):
        super().__init__()
        self.convolution1 = nn.Conv2d(n_frames, 32, kernel_size=4, stride=2, padding=2)
        self.norm1 = nn.BatchNorm2d(32)
        self.convolution2 = nn.Conv2d(32, 32, kernel_size=2, stride=2)
        self.norm2 = nn.BatchNorm2d(32)
        self.hidden1 = nn.Linear(32 * 11 * 10, 512)
        self.hidden2 = nn.Linear(512, 128)
        self.output = nn.Linear(128, n_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.convolution1(x)))
        x = F.relu(self.norm2(self.convolution2(x)))
        x = torch.flatten(x, start_dim=1)
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        return self.output(x)


# --- replay memory -------------------------------------------------------------------------------
class ReplayMemory:
    """A numpy ring buffer of transitions, frames stored as uint8 (lossless: preprocessed frames
    are whole numbers in 0..255).

    The next state is always the state shifted by one frame plus the new frame (the protocol's
    NOOP frames after a lost life are never stacked), so a transition stores the 5-frame state and
    only the one new frame: 6 frames instead of 10.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.states = np.zeros((capacity, FRAMES, HEIGHT, WIDTH), dtype=np.uint8)
        self.next_frames = np.zeros((capacity, HEIGHT, WIDTH), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, state: np.ndarray, action: int, next_state: np.ndarray, reward: float, done: bool) -> None:
        i = self.pos
        self.states[i] = state
        self.next_frames[i] = next_state[-1]
        self.actions[i], self.rewards[i], self.dones[i] = action, reward, done
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """A uniform minibatch (with replacement; the lesson's random.sample draws without)."""
        idx = rng.integers(0, self.size, size=batch_size)
        states = self.states[idx]
        next_states = np.concatenate([states[:, 1:], self.next_frames[idx, None]], axis=1)
        return states, self.actions[idx], next_states, self.rewards[idx], self.dones[idx]

    def state_dict(self) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "states": self.states[:n], "next_frames": self.next_frames[:n], "actions": self.actions[:n],
            "rewards": self.rewards[:n], "dones": self.dones[:n], "pos": np.array(self.pos),
        }

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        n = min(len(d["actions"]), self.capacity)
        for name in ("states", "next_frames", "actions", "rewards", "dones"):
            getattr(self, name)[:n] = d[name][:n]
        self.size = n
        self.pos = int(d["pos"]) % self.capacity if n == self.capacity else n % self.capacity


# --- reward shaping ------------------------------------------------------------------------------
def shape_reward(reward: float, life_lost: bool, won: bool, args: Args) -> float:
    """The lesson's shaping: log base 1000 of a positive reward (10 -> 0.33, 200 -> 0.77), the
    ``reward_lose`` penalty on a lost life and the ``reward_win`` bonus on a won game."""
    r = math.log(reward, 1000) if reward > 0 else reward
    if life_lost:
        r += args.reward_lose
    if won:
        r += args.reward_win
    return r


def epsilon(step: int, args: Args) -> float:
    return args.eps_end + (args.eps_start - args.eps_end) * math.exp(-step / args.eps_decay)


# --- one optimisation step -----------------------------------------------------------------------
def optimize(policy: QNetwork, target: QNetwork, optimizer: torch.optim.Optimizer, memory: ReplayMemory,
             rng: np.random.Generator, args: Args, device: torch.device) -> tuple[float, float]:
    """One TD step on a minibatch; returns (loss, mean max-Q of the batch)."""
    s, a, s2, r, d = memory.sample(args.batch_size, rng)
    states = torch.from_numpy(s).to(device).float()
    next_states = torch.from_numpy(s2).to(device).float()
    actions = torch.from_numpy(a).to(device)
    rewards = torch.from_numpy(r).to(device)
    dones = torch.from_numpy(d).to(device)

    q_all = policy(states)
    predicted = q_all.gather(1, actions[:, None]).squeeze(1)
    with torch.no_grad():
        next_values = target(next_states).max(1).values
        # Lesson bug fixed: it wrote `(-dones)` on a bool tensor; the target is r + gamma*(1-d)*maxQ'.
        labels = rewards + args.gamma * (1.0 - dones) * next_values
    loss = F.smooth_l1_loss(predicted, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in policy.parameters():
        p.grad.data.clamp_(-1, 1)
    optimizer.step()
    return float(loss.detach()), float(q_all.detach().max(1).values.mean())


def greedy_policy(model: QNetwork, device: torch.device):
    """Batch of states -> argmax actions, with the model in eval mode (BatchNorm running stats)."""

    def act(states: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            q = model(torch.as_tensor(np.asarray(states), dtype=torch.float32, device=device))
        return q.argmax(1).cpu().numpy()

    return act


# --- training ------------------------------------------------------------------------------------
def train(args: Args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)

    policy = QNetwork().to(device)
    target = QNetwork().to(device)
    target.load_state_dict(policy.state_dict())
    optimizer = torch.optim.SGD(policy.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True)
    memory = ReplayMemory(args.memory_size)
    step, episode, best_eval = 0, 0, -math.inf
    history: dict[str, list] = {k: [] for k in ("step", "score", "shaped", "length", "epsilon", "loss", "q", "time")}
    evals: dict[str, list] = {"step": [], "mean": [], "std": []}
    wall_before = 0.0  # training seconds of earlier sessions of a resumed run

    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        policy.load_state_dict(ck["policy"])
        target.load_state_dict(ck["target"])
        optimizer.load_state_dict(ck["optimizer"])
        step, episode, best_eval = ck["step"], ck["episode"], ck["best_eval"]
        history, evals, wall_before = ck["history"], ck["evals"], ck["wall_seconds"]
        set_rng_state(ck["rng"])
        rng.bit_generator.state = ck["np_rng"]
        if (out / "replay.npz").exists():
            with np.load(out / "replay.npz") as z:
                memory.load_state_dict(dict(z))
        print(f"resumed at step {step}, episode {episode}, replay {len(memory)} transitions", flush=True)
    save_json(out / "args.json", asdict(args))

    env = make_env(MSPACMAN)
    start = time.monotonic()
    last_ckpt = start

    def wall() -> float:
        return wall_before + time.monotonic() - start

    def checkpoint(progress: Progress) -> None:
        nonlocal best_eval
        if args.eval_episodes > 0:
            returns = evaluate(greedy_policy(policy, device), MSPACMAN,
                               range(VALIDATION_SEED0, VALIDATION_SEED0 + args.eval_episodes))
            evals["step"].append(step)
            evals["mean"].append(float(returns.mean()))
            evals["std"].append(float(returns.std()))
            progress.log(f"step {step}: greedy validation score {summary(returns)}")
            if returns.mean() > best_eval:
                best_eval = float(returns.mean())
                save_checkpoint(out / "best.pt", {"policy": policy.state_dict(), "step": step,
                                                  "validation_mean": best_eval, "args": asdict(args)})
        if args.save_replay:
            tmp = out / "replay.tmp.npz"
            np.savez(tmp, **memory.state_dict())
            tmp.replace(out / "replay.npz")
        save_checkpoint(ckpt_path, {
            "policy": policy.state_dict(), "target": target.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "episode": episode, "best_eval": best_eval, "history": history, "evals": evals,
            "wall_seconds": wall(), "rng": rng_state(), "np_rng": rng.bit_generator.state, "args": asdict(args),
        })
        save_json(out / "metrics.json", {"step": step, "episode": episode, "wall_seconds": wall(),
                                         "best_validation_mean": best_eval, "evals": evals})
        plot(out, history, evals)

    def new_episode():
        # Training seeds stay below the validation (900_000+) and held-out (1_000_000+) seeds.
        gen = play_episode(MSPACMAN, env, (args.seed * 100_003 + episode) % VALIDATION_SEED0)
        return gen, next(gen)

    gen, turn = new_episode()
    ep_shaped, ep_losses, ep_qs, _ep_start = 0.0, [], [], step
    loss = q_mean = float("nan")
    with Progress(args.steps, "DQN MsPacman") as progress:
        progress.update(step)
        while step < args.steps:
            if turn.done:  # episode over: record it and start the next one
                episode += 1
                for k, v in (("step", step), ("score", turn.episode_return), ("shaped", ep_shaped),
                             ("length", turn.length), ("epsilon", epsilon(step, args)),
                             ("loss", float(np.mean(ep_losses)) if ep_losses else float("nan")),
                             ("q", float(np.mean(ep_qs)) if ep_qs else float("nan")), ("time", wall())):
                    history[k].append(v)
                recent = history["score"][-20:]
                progress.update(0, episode=episode, score=turn.episode_return, avg20=float(np.mean(recent)),
                                eps=epsilon(step, args), loss=loss)
                gen, turn = new_episode()
                ep_shaped, ep_losses, ep_qs, _ep_start = 0.0, [], [], step
                continue

            state = turn.state
            eps = epsilon(step, args)
            if rng.random() > eps:
                policy.eval()  # lesson bug fixed: act with BatchNorm's running statistics
                with torch.no_grad():
                    action = int(policy(torch.from_numpy(state).to(device)[None]).argmax(1))
            else:
                action = int(rng.integers(N_ACTIONS))
            turn = gen.send(action)
            env_ale = env.unwrapped.ale
            terminated = turn.done and env_ale.game_over(with_truncation=False)
            won = terminated and env_ale.lives() > 0
            reward = shape_reward(turn.reward, turn.life_lost, won, args)
            ep_shaped += reward
            memory.push(state, action, turn.state, reward, terminated)
            step += 1

            if step % args.train_every == 0 and len(memory) >= max(args.learning_starts, args.batch_size):
                policy.train()
                loss, q_mean = optimize(policy, target, optimizer, memory, rng, args, device)
                ep_losses.append(loss)
                ep_qs.append(q_mean)
            if step % args.target_update == 0:
                target.load_state_dict(policy.state_dict())
            progress.update(1)
            if time.monotonic() - last_ckpt >= args.checkpoint_minutes * 60:
                checkpoint(progress)
                last_ckpt = time.monotonic()
        checkpoint(progress)
    env.close()
    return out


def plot(out: Path, history: dict[str, list], evals: dict[str, list]) -> None:
    s = history["step"]
    plot_curves(out / "curves.png", {
        "game score per training episode": (s, history["score"]),
        "greedy validation score (10 seeds)": (evals["step"], evals["mean"]),
        "shaped return per episode": (s, history["shaped"]),
        "mean TD loss per episode": (s, history["loss"]),
        "mean max-Q per episode": (s, history["q"]),
        "epsilon": (s, history["epsilon"]),
    }, title="DQN on MsPacman (x: agent steps)", smooth=20)


# --- export --------------------------------------------------------------------------------------
def load_policy(checkpoint: str | Path) -> QNetwork:
    """The policy network of a checkpoint (``checkpoint.pt`` or ``best.pt``), in eval mode."""
    model = QNetwork()
    model.load_state_dict(load_checkpoint(checkpoint)["policy"])
    return model.eval()


def export(checkpoint: str | Path, out: str | Path, episodes: int = 0) -> np.ndarray | None:
    """Export a checkpoint's policy to ONNX (eval mode), verify it, and optionally score it with
    onnxruntime on ``episodes`` held-out seeds (1_000_000...)."""
    return export_and_score(load_policy(checkpoint), MSPACMAN, out, episodes)
