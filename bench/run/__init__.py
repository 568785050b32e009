"""Running it: the runner, isolation, the cell process, probes, the environment inventory, progress."""
