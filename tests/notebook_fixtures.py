"""Notebooks in the style of the course's lessons, written for the tests (not the course's text).

``mspacman_cells()`` returns the cells of a correct MsPacman DQN notebook; tests swap one cell
(``PREPROCESS`` etc.) for a variant with a classic mistake.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

IMPORTS = '''%matplotlib inline
import math
import random
from collections import deque, namedtuple
from itertools import count

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import gymnasium as gym
import matplotlib.pyplot as plt
from IPython import display

plt.ion()
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
'''

PARAMS = '''hyper = 1
params = {
    'batch_size': 64,          # samples per update
    'sequence_size': 5,        # frames per state
    'gamma': 0.99,
    'eps_start': 1.0, 'eps_end': 0.05, 'eps_decay': 500_000,
    'target_update': 5000,
    'lr': 1e-4,
    'n_actions': 5,
    'skip_start': 80,
    'skip_dead': 36,
}
'''

MEMORY = '''Step = namedtuple('Step', ('state', 'action', 'next_state', 'reward', 'done'))

class ReplayMemory:
    def __init__(self, size):
        self.buffer = deque([], maxlen=size)

    def push(self, *args):
        self.buffer.append(Step(*args))

    def sample(self, n):
        return random.sample(self.buffer, n)

    def __len__(self):
        return len(self.buffer)
'''

NETWORK = '''class DQN(nn.Module):
    def __init__(self, n_observations, n_actions):
        super().__init__()
        self.conv_a = nn.Conv2d(n_observations, 32, kernel_size=4, stride=2, padding=2)
        self.bn_a = nn.BatchNorm2d(32)
        self.conv_b = nn.Conv2d(32, 32, kernel_size=2, stride=2)
        self.bn_b = nn.BatchNorm2d(32)
        self.fc_a = nn.Linear(32 * 11 * 10, 256)
        self.fc_b = nn.Linear(256, n_actions)

    def forward(self, x):
        x = F.relu(self.bn_a(self.conv_a(x)))
        x = F.relu(self.bn_b(self.conv_b(x)))
        x = torch.flatten(x, start_dim=1)
        return self.fc_b(F.relu(self.fc_a(x)))
'''

AGENT = '''class Agent:
    def __init__(self, env, policy, target, memory):
        self.env, self.policy, self.target, self.memory = env, policy, target, memory
        self.steps = 0
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=params['lr'])
'''

PREPROCESS = '''# grayscale, crop, frame, downsample
def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8, device=device)
    frame = frame.float().mean(dim=2).type(torch.uint8)[1:171]
    edge = torch.full((2, 160), 150).to(device)
    frame = torch.cat([edge, frame, edge])[1::4, 1::4]
    return frame.float()

Agent.preprocess_observation = preprocess_observation
'''

OPTIMIZE_OK = '''def optimize_model(self):
    if len(self.memory) < params['batch_size']:
        return
    batch = Step(*zip(*self.memory.sample(params['batch_size'])))
    states, actions = torch.stack(batch.state).squeeze(1), torch.cat(batch.action)
    q = self.policy(states).gather(1, actions)
    return q

Agent.optimize_model = optimize_model
'''

# the lesson's copied bug: a parenthesis never closed in optimize_model
OPTIMIZE_BROKEN = '''def optimize_model(self):
    if len(self.memory) < params['batch_size']:
        return
    batch = Step(*zip(*self.memory.sample(params['batch_size'])))
    states, actions, rewards = torch.stack(batch.state).squeeze(1), torch.cat(
        batch.action, torch.stack(batch.reward).squeeze(1)
    q = self.policy(states).gather(1, actions)
    return q

Agent.optimize_model = optimize_model
'''

RUN = '''def run_episode(self):
    observation, info = self.env.reset()
    for _ in range(params['skip_start']):
        self.env.step(3)
    return observation

Agent.run_episode = run_episode
'''

TRAIN = '''env = gym.make("ALE/MsPacman-v5", render_mode="rgb_array")
policy = DQN(params['sequence_size'], params['n_actions']).to(device)
target = DQN(params['sequence_size'], params['n_actions']).to(device)
agent = Agent(env, policy, target, ReplayMemory(10000))
while True:
    agent.run_episode()
'''

PREPROCESS_VARIANTS = {
    "no_crop": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)
    edge = torch.full((2, 160), 150)
    return torch.cat([edge, frame, edge])[1::4, 1::4].float()

Agent.preprocess_observation = preprocess_observation
''',
    "wrong_crop": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)[0:170]
    edge = torch.full((2, 160), 150)
    return torch.cat([edge, frame, edge])[1::4, 1::4].float()

Agent.preprocess_observation = preprocess_observation
''',
    "no_border": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)[1:171]
    return frame[1::4, 1::4].float()

Agent.preprocess_observation = preprocess_observation
''',
    "border_zero": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)[1:171]
    edge = torch.zeros((2, 160), dtype=torch.uint8)
    return torch.cat([edge, frame, edge])[1::4, 1::4].float()

Agent.preprocess_observation = preprocess_observation
''',
    "stride_offset": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)[1:171]
    edge = torch.full((2, 160), 150)
    return torch.cat([edge, frame, edge])[::4, ::4].float()

Agent.preprocess_observation = preprocess_observation
''',
    "luminance": '''def preprocess_observation(self, observation):
    gray = np.dot(observation[..., :3], [0.299, 0.587, 0.114]).astype(np.uint8)[1:171]
    gray = np.concatenate([np.full((2, 160), 150), gray, np.full((2, 160), 150)])
    return gray[1::4, 1::4].astype(np.float32)

Agent.preprocess_observation = preprocess_observation
''',
    "rounding": '''def preprocess_observation(self, observation):
    gray = np.round(observation.mean(axis=2))[1:171]
    gray = np.concatenate([np.full((2, 160), 150.0), gray, np.full((2, 160), 150.0)])
    return gray[1::4, 1::4].astype(np.float32)

Agent.preprocess_observation = preprocess_observation
''',
    "div255": '''def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2).type(torch.uint8)[1:171]
    edge = torch.full((2, 160), 150)
    return (torch.cat([edge, frame, edge])[1::4, 1::4].float() / 255.0)

Agent.preprocess_observation = preprocess_observation
''',
}

CUDA_NETWORK = '''class DQN(nn.Module):
    def __init__(self, n_observations, n_actions):
        super().__init__()
        self.conv = nn.Conv2d(n_observations, 16, kernel_size=4, stride=4).cuda()
        self.head = nn.Linear(16 * 11 * 10, n_actions).cuda()

    def forward(self, x):
        x = x.to('cuda')
        return self.head(torch.flatten(F.relu(self.conv(x)), start_dim=1))
'''

LUNAR_CELLS = [
    'import os\nos.environ["KERAS_BACKEND"] = "torch"\nimport gymnasium as gym\nimport numpy as np\nimport keras\nfrom keras import ops, layers\n',
    'seed = 7\ngamma = 0.98\nmax_steps_per_episode = 1000\nenv = gym.make("LunarLander-v3")\nenv.reset(seed=seed)\n',
    'num_inputs = 8\nnum_actions = 4\nnum_hidden = 64\n\ninputs = layers.Input(shape=(num_inputs,))\n'
    'common = layers.Dense(num_hidden, activation="relu")(inputs)\naction = layers.Dense(num_actions, activation="softmax")(common)\n'
    'critic = layers.Dense(1)(common)\nactor_model = keras.Model(inputs=inputs, outputs=action)\n'
    'critic_model = keras.Model(inputs=inputs, outputs=critic)\n',
    'while True:\n    state = env.reset()[0]\n    break\n',
    'actor_model.export("model.onnx", format="onnx")\n',
]


def mspacman_cells(**replace: str) -> list[str]:
    cells = {"imports": IMPORTS, "params": PARAMS, "memory": MEMORY, "network": NETWORK, "agent": AGENT,
             "preprocess": PREPROCESS, "optimize": OPTIMIZE_OK, "run": RUN, "train": TRAIN}
    cells.update(replace)
    return list(cells.values())


def write_notebook(path: Path, cells: list[str], *, markdown: str = "# ДЗ: DQN для MsPacman") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown)] + [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
