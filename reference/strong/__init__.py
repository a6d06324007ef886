"""A strong MsPacman reference: double + dueling n-step DQN on one CPU core. Entry point: ``python -m reference.strong``."""
