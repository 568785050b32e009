"""What to measure: the profile, its expansion into cells, workloads, trace files."""
