"""Robust architecture search: search files (space.py), objectives (objectives.py), the
trial job (element.py), the ask-and-tell driver over SLURM job arrays (driver.py) and the
Pareto outputs (pareto.py). README, "Robust architecture search"."""
