"""Evaluation: the sharded runner (also used by training's validation), attack suites
(seed, autoattack, eot, full), the gradient-masking audit, and resumable result files."""
