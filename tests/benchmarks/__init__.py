"""Benchmarks (not part of the test run): the agent against bare loops doing the same work, as ratios."""
