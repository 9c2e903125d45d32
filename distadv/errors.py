"""User-facing errors: each carries one line that names the problem and the fix.

Exit statuses of the entry points: 2 = bad input (UserError), 3 = a peer process died or timed
out, 4 = the run failed and stopped (RunFailure: its last good checkpoint is kept).
"""


class UserError(Exception):
    """Bad input from the user; the entry points print it on one line and exit with 2."""


class ConfigError(UserError):
    """An unknown recipe or key, a wrong type, or an invalid value."""


class DataError(UserError):
    """Missing, incomplete or corrupt data files."""


class RunDirError(UserError):
    """A run directory that cannot be used (another run lives there)."""


class CheckpointError(RunDirError):
    """A checkpoint that cannot be used. ``corrupt``: truncated or damaged (a caller may fall
    back to an older file); otherwise refused (a hostile pickle, another architecture)."""

    def __init__(self, message: str, corrupt: bool = False):
        super().__init__(message)
        self.corrupt = corrupt


class GridError(UserError):
    """A grid file, cluster profile, grid directory or submission that cannot be used."""


class SearchError(GridError):
    """A search file (recipes/search/), its space or objectives, or a search directory that
    cannot be used."""


class RunFailure(Exception):
    """The run cannot go on (disk full, a non-finite loss, another rank failed). Every rank
    stops together; the entry points print one line and exit with 4."""


class DiskFullError(RunFailure):
    """A write ran out of space; the file it would have replaced is intact."""


class NonFiniteLoss(RunFailure):
    """The training loss became NaN or infinite; raised before the step is applied."""
