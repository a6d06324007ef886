"""Actor-critic agents for LunarLander: the course notebook's (``seed``) and PPO (``improved``).
Entry point: ``python -m reference.actor_critic --flavour seed|improved``."""
