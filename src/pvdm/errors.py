"""Errors a user can cause. The CLI prints their message as one line instead of a traceback."""


class PvdmError(Exception):
    """Base class: a problem with the user's input, files or settings, with a clear message."""


class ConfigError(PvdmError, ValueError):
    """An unknown config key, a value of the wrong type, or a value out of range."""


class DataError(PvdmError):
    """A dataset path that does not exist or holds no usable video."""


class WeightsError(PvdmError, FileNotFoundError):
    """A pretrained-network file (I3D, C3D, VGG16, LPIPS) that is missing or corrupt."""


class CheckpointError(PvdmError):
    """A checkpoint or state dict that cannot be loaded (missing, extra or mis-shaped keys)."""
