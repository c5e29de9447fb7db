"""Ray Job entrypoints: `ray job submit --working-dir . -- python -m jobs.<name> ...`.

Each job attaches to the running cluster (`ray.init(address="auto")`), prints progress to
stderr and its result as one JSON line on stdout, and exits 0 when everything it was asked
to do succeeded, 1 when part of it was refused (the output says which), 2 on bad usage."""
