"""Domain exceptions. Each carries the errno the FUSE adapter returns for it;
this module is the one place that decides which errno a failure becomes."""

import contextlib
import errno


class FsError(Exception):
    """A filesystem-level failure with a POSIX errno."""

    errno = errno.EIO

    def __init__(self, message: str = "", *, err: int | None = None):
        super().__init__(message or self.__class__.__name__)
        if err is not None:
            self.errno = err


class NotFound(FsError):
    errno = errno.ENOENT


class Exists(FsError):
    errno = errno.EEXIST


class NotEmpty(FsError):
    errno = errno.ENOTEMPTY


class NotADir(FsError):
    errno = errno.ENOTDIR


class IsADir(FsError):
    errno = errno.EISDIR


class NameTooLong(FsError):
    errno = errno.ENAMETOOLONG


class InvalidName(FsError):
    """A name the key mapping cannot hold (not UTF-8, contains '/', ...)."""

    errno = errno.EINVAL


class ReadOnly(FsError):
    errno = errno.EROFS


class BadHandle(FsError):
    errno = errno.EBADF


class Locked(FsError):
    """S3 Object Lock protects the object (a retention not yet over, or a legal hold)."""
    errno = errno.EACCES


class NotSupported(FsError):
    errno = errno.ENOTSUP


class Stale(FsError):
    """An open file's name now holds another file's object, or nothing (it was replaced
    by a rename or unlinked and written again): its handles never read or change the
    other file's bytes."""

    errno = errno.ESTALE

    def __init__(self, message: str = "file was replaced or removed while open"):
        super().__init__(message)


class Changed(Stale):
    """A ranged GET sent with the ETag its size came from (If-Match) found another
    version of the object there: another writer replaced it."""

    def __init__(self, message: str = "the object was replaced by another writer"):
        super().__init__(message)


class StoreError(FsError):
    """The object store failed (network, server error, access denied). Always EIO
    to the caller; the message says what happened for the log."""

    errno = errno.EIO

    def __init__(self, message: str, *, code: str = "", transient: bool = False, skew: float | None = None):
        super().__init__(message)
        self.code = code
        self.transient = transient
        # The local clock minus the server's, in seconds, as far as the answer tells
        # (its Date header, or RequestTime/ServerTime of a RequestTimeTooSkewed); None
        # when there was no answer.
        self.skew = skew


@contextlib.contextmanager
def single_error():
    """Around a trio nursery: its tasks' FsErrors come out wrapped in an ExceptionGroup;
    re-raise the first of them alone, so callers see one FsError with its errno. A group
    holding anything else (Cancelled, a bug) passes through unchanged."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors, rest = group.split(FsError)
        if errors is None or rest is not None:
            raise
        while isinstance(errors, BaseExceptionGroup):
            errors = errors.exceptions[0]
        raise errors from None


class ConfigError(Exception):
    """A user mistake in configuration or command line: printed as one line, no traceback."""


# Exit codes of the commands, one per cause a user can act on (README); MountError carries one.
EXIT_OTHER, EXIT_USAGE, EXIT_CREDENTIALS, EXIT_NO_BUCKET, EXIT_UNREACHABLE, EXIT_MOUNTPOINT, EXIT_NO_FUSE = \
    1, 2, 3, 4, 5, 6, 7
EXIT_CLOCK_SKEW = 8  # S3 refuses the signature's time: this node's clock is off


class MountError(Exception):
    """Mounting failed for a reason the user can fix; ``exit_code`` tells which."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
