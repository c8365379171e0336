"""One small exception family: every message says what is wrong, where, and how to fix it."""


class SoundflowError(Exception):
    """Base class of soundflow's own errors."""


class DatasetError(SoundflowError):
    """The dataset as a whole is unusable (missing classes, wrong layout, no clips)."""


class AudioDecodeError(SoundflowError):
    """One audio file cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DownloadError(SoundflowError):
    """A download failed, was truncated, or did not match its expected size or checksum."""
