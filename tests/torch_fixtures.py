"""Policies exported with torch.onnx, as students export them."""

from __future__ import annotations

import torch
from torch import nn


class LessonDQN(nn.Module):
    """The lesson's architecture (written for the tests): two conv+BN layers, 3520 -> 512 -> 128 -> 5."""

    def __init__(self, n_observations: int = 5, n_actions: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(n_observations, 32, kernel_size=4, stride=2, padding=2)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=2, stride=2)
        self.bn1, self.bn2 = nn.BatchNorm2d(32), nn.BatchNorm2d(32)
        self.fc1, self.fc2, self.out = nn.Linear(32 * 11 * 10, 512), nn.Linear(512, 128), nn.Linear(128, n_actions)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(x, start_dim=1)
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def actor_mlp(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4), nn.Softmax(dim=-1))


def export(model: nn.Module, path, *, state_shape, dynamic: bool, train_mode: bool = False, seed: int = 0) -> str:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    model.train(train_mode)
    dummy = torch.zeros(1, *state_shape)
    kwargs = {"dynamic_axes": {"state": {0: "batch"}, "q": {0: "batch"}}} if dynamic else {}
    torch.onnx.export(model, dummy, str(path), input_names=["state"], output_names=["q"], dynamo=False,
                      training=torch.onnx.TrainingMode.TRAINING if train_mode else torch.onnx.TrainingMode.EVAL,
                      do_constant_folding=not train_mode, **kwargs)
    return str(path)
