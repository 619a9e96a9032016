"""The name <-> key mapping: path 'a/b/c' is key 'PREFIX/a/b/c'; a directory
'a/b' is the prefix 'PREFIX/a/b/' and may have a zero-byte marker object there."""

from __future__ import annotations

from s3pvefs.errors import InvalidName, NameTooLong

NAME_MAX = 255
KEY_MAX = 1024
FOLDER_SUFFIX = "_$folder$"  # old s3fs/Hadoop directory marker, recognised when listing
DIR_CONTENT_TYPE = "application/x-directory"  # of the "dir/" marker objects we write
# The mount's object of zeros (write/zeros.py) at PREFIX/ZEROS_NAME: never a name here.
ZEROS_NAME = ".s3pvefs-zeros"
# Where the object of a file unlinked (or renamed over) while open is kept for its
# handles once a new file takes its name, until its last close (fs/filesystem.py,
# _keep_hidden_bytes): PREFIX/ASIDE_NAME/<random>. Never a name here.
ASIDE_NAME = ".s3pvefs-open"
RESERVED_NAMES = (ZEROS_NAME, ASIDE_NAME)
RESERVED_RAW = tuple(n.encode() for n in RESERVED_NAMES)  # as the kernel gives names


def mount_own(path: str) -> bool:
    """A path below the prefix that holds the mount's own objects, never a file's."""
    return path == ZEROS_NAME or path.startswith(ASIDE_NAME + "/")


def join_path(parent: str, name: str) -> str:
    """A path below the mount root ("" is the root), "/"-separated."""
    return f"{parent}/{name}" if parent else name


def check_name(raw: bytes) -> str:
    """A name from the kernel as a key component, or an error the user understands."""
    if len(raw) > NAME_MAX:
        raise NameTooLong(f"name longer than {NAME_MAX} bytes")
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        raise InvalidName(f"name {raw!r} cannot be an S3 key component")
    if raw in RESERVED_RAW:
        raise InvalidName(f"{raw.decode()} is reserved for the mount's own objects")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"name {raw!r} is not UTF-8; S3 keys are UTF-8") from None


def listable_name(name: str) -> bool:
    """Whether a key component found in the bucket can be shown as a file name."""
    return bool(name) and name not in (".", "..", *RESERVED_NAMES) and len(name.encode("utf-8")) <= NAME_MAX \
        and "\0" not in name


class KeyMapper:
    def __init__(self, prefix: str):
        self.root = f"{prefix}/" if prefix else ""

    def key(self, path: str) -> str:
        """Object key of the file at path ('' is the root)."""
        key = self.root + path
        if len(key.encode("utf-8")) > KEY_MAX:
            raise NameTooLong(f"key longer than {KEY_MAX} bytes")
        return key

    def dir_prefix(self, path: str) -> str:
        """Key prefix of the directory at path; also the key of its marker object."""
        return self.root + path + "/" if path else self.root

    def aside_key(self, token: str) -> str:
        """Key of the object kept aside for a file open when its name was taken."""
        return f"{self.root}{ASIDE_NAME}/{token}"

    def is_aside(self, key: str) -> bool:
        return key.startswith(f"{self.root}{ASIDE_NAME}/")

    def path_of_key(self, key: str) -> str:
        return key[len(self.root):]
