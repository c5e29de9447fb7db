"""Where replicas run: service discovery backends and the placement planner."""
