"""User-facing errors: each carries one line that names the problem and the fix."""


class UserError(Exception):
    """Bad input from the user; the entry points print it on one line and exit with 2."""


class ConfigError(UserError):
    """An unknown recipe or key, a wrong type, or an invalid value."""


class DataError(UserError):
    """Missing, incomplete or corrupt data files."""


class RunDirError(UserError):
    """A run directory that cannot be used (another run lives there)."""


class GridError(UserError):
    """A grid file, cluster profile, grid directory or submission that cannot be used."""
