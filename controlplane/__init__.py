"""UAV fleet control plane on Ray."""
