"""Reading a file named by untrusted input: opened once, checked on the open descriptor, read from it.

A check on a path and a later open of the same path are two steps, and the file can be swapped
(for a link to /etc/shadow, a FIFO, a huge file) in between. So a file is opened once, without
following a link in its last component and without blocking (a FIFO cannot hang the open), and
everything else is asked of the descriptor: where the opened file really lies (/proc/self/fd on
Linux), whether it is a regular file, its size; then the bytes are read from that descriptor and
hashed, and those bytes are what the caller uses.

A refusal says nothing about the file beyond the name the caller gave: not whether a file outside
the folder exists, nor its size or kind.
"""

import errno
import hashlib
import os
import stat

from .errors import EstellaError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
BLOCK = 1 << 20


class UntrustedFileError(EstellaError):
    """A named file that cannot be used: missing, outside its folder, not a regular file, or too large."""


class FileMissing(UntrustedFileError):
    """The named file does not exist."""


class FileOutside(UntrustedFileError):
    """The named file lies outside the folder it must be in (a link, or a folder swapped for one)."""


class NotRegular(UntrustedFileError):
    """The named file is a FIFO, a device, a folder or a socket."""


class TooLarge(UntrustedFileError):
    """The named file is larger than the caller accepts."""


def open_file(path, root=None, what=None):
    """A read-only descriptor of path, a regular file; inside root (a folder, links followed) if given.

    A link is followed only once it is resolved and found inside root, and the descriptor itself is
    checked afterwards, so a link swapped in at any moment is refused rather than followed."""
    what = what or path
    real_root = _realpath(root, what) if root is not None else None
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK)
    except FileNotFoundError:
        raise FileMissing(f"{what} is missing") from None
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.EMLINK):
            raise UntrustedFileError(f"cannot open {what}: {e.strerror}") from None
        fd = _open_link(path, real_root, what)  # a link in the last component
    try:
        _check_descriptor(fd, path, real_root, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_link(path, real_root, what):
    target = _realpath(path, what)
    if real_root is not None and not _inside(target, real_root):
        raise FileOutside(f"{what} points outside its folder: refused")
    try:
        return os.open(target, os.O_RDONLY | NOFOLLOW | NONBLOCK)
    except FileNotFoundError:
        raise FileMissing(f"{what} is missing") from None
    except OSError:  # swapped again since it was resolved: refused rather than chased
        raise UntrustedFileError(f"{what} changed while it was opened: refused") from None


def _check_descriptor(fd, path, real_root, what):
    info = os.fstat(fd)
    if real_root is not None:
        opened = _opened_path(fd)
        if opened is not None:
            inside = _inside(opened, real_root)
        else:  # no /proc: the resolved path must still be the file we hold
            try:
                now = os.stat(path)
                inside = _inside(os.path.realpath(path), real_root) and (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)
            except OSError:
                inside = False
        if not inside:
            raise FileOutside(f"{what} points outside its folder: refused")
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(f"{what} is not a regular file: refused")


def _opened_path(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _realpath(path, what):
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):  # a loop of links, or one that changes while it is resolved
        raise UntrustedFileError(f"{what} cannot be resolved: refused") from None


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_file(path, root=None, what=None, size=None, max_bytes=None, keep=True):
    """(bytes or None, sha256 hex) of a file opened once (open_file) and read from that descriptor.

    size: the exact size expected (refused otherwise, before reading); max_bytes: the largest accepted.
    keep=False hashes without keeping the bytes."""
    what = what or path
    fd = open_file(path, root, what)
    with os.fdopen(fd, "rb") as f:
        actual = os.fstat(fd).st_size
        if size is not None and actual != size:
            raise SizeMismatch(f"{what} is {actual} bytes but {size} are expected: the file is truncated or "
                               "was replaced")
        if max_bytes is not None and actual > max_bytes:
            raise TooLarge(f"{what} is larger than {_mb(max_bytes)}: refused")
        digest, blocks, total = hashlib.sha256(), [], 0
        limit = size if size is not None else max_bytes
        for block in iter(lambda: f.read(BLOCK), b""):
            total += len(block)
            if limit is not None and total > limit:  # it grew while it was read
                raise TooLarge(f"{what} changed while it was read: refused")
            digest.update(block)
            if keep:
                blocks.append(block)
    return (b"".join(blocks) if keep else None), digest.hexdigest()


class SizeMismatch(UntrustedFileError):
    """The file's size is not the one listed for it."""


def file_sha256(path):
    """sha256 hex of a file the caller itself wrote or named (export's own files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _mb(n):
    return f"{n / (1 << 20):.0f} MB"
