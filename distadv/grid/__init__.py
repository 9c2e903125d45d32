"""Grids of runs on SLURM: grid files (spec), cluster profiles (cluster), the job that trains
one element (element), the grid directory's records (store), SLURM states (status),
submission (submit) and the tables and plots of a finished grid (report, plots)."""
