"""The course lesson's DQN for MsPacman (PyTorch). Entry point: ``python -m reference.dqn``."""
