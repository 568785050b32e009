"""Planning: memory fit, capacity plans, projection, power, the hardware catalogue."""
