"""Soak and fuzz harnesses: the agent as a subprocess, a real broker, faults and bad input (make soak, make fuzz)."""
