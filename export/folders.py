"""The export's folders: the --out target checked before any work, the temp folder it is built in,
and the swap that puts it in place. No TensorFlow here: `estella export` answers these checks first.

The export is built in PARENT/.export-tmp-PID-* (marked INCOMPLETE until it is done) and swapped
with an existing --out in one atomic rename (renameat2 RENAME_EXCHANGE on Linux), so the --out
folder is at every moment either the old export or the new one. Where the kernel cannot exchange,
the old folder is moved aside into PARENT/.export-old-PID-*/ (with a note of its name) first and
moved back if the new one cannot be put in place. A kill -9 at any point leaves only folders of a
dead process, which the next export into the same parent clears: an old export moved aside whose
--out is missing is put back, everything else of the dead process is removed.
"""

import ctypes
import ctypes.util
import os
import shutil
import signal
import tempfile

from estella.build.fileio import process_alive
from estella.runtime.manifest import MANIFEST, UNFINISHED_MARKER, UNFINISHED_PREFIX

from . import manifest as manifest_mod
from .errors import ExportError

TMP_PREFIX = UNFINISHED_PREFIX
INCOMPLETE = UNFINISHED_MARKER
OLD_PREFIX = ".export-old-"
OLD_NAME_FILE = "TARGET"  # in an old folder: the --out name its export came from
# Tests only (documented in tests/export/test_export_kill.py): the export SIGKILLs itself on reaching
# the named stage, so that a kill lands at a known point rather than after a guessed delay.
KILL_AT = "ESTELLA_TEST_KILL_AT"


def default_out(run_dir):
    return os.path.join(run_dir, "export")


def check_run_dir(run_dir):
    """The cheap check on the run, before TensorFlow is imported: it is a folder with a config.json."""
    config = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config):
        raise ExportError(f"{run_dir} is not a run directory: {config} is missing (train one with `estella train`)")


def reached(stage):
    if os.environ.get(KILL_AT) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def check_target(out_dir, force):
    """Refuse an existing target unless --force, and even then anything but an estella export of ours."""
    if not os.path.lexists(out_dir):
        return
    if not force:
        raise ExportError(f"{out_dir} already exists; pass --force to replace it, or choose another --out")
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        raise ExportError(f"{out_dir} exists and is not a directory; --force only replaces an estella export")
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise ExportError(f"--force refuses to replace {out_dir}: it has no {MANIFEST}, so it is not an estella "
                          "export; move it or choose another --out")
    foreign = foreign_files(out_dir)
    if foreign:
        raise ExportError(f"--force refuses to replace {out_dir}: it holds files that the export did not write "
                          f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); move them or choose "
                          "another --out")


def foreign_files(out_dir) -> list:
    """Files in out_dir that its manifest does not list (all of them if the manifest is unreadable)."""
    present = sorted(os.path.relpath(os.path.join(folder, f), out_dir).replace(os.sep, "/")
                     for folder, _, files in os.walk(out_dir) for f in files)
    try:
        old = manifest_mod.read_manifest_json(out_dir)
        listed = {f["path"] for a in old["artifacts"] for f in a["files"]} | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return present
    return [p for p in present if p not in listed]


def check_writable(out_dir):
    """Exit 2 naming the path if --out lies under a regular file, or where folders cannot be made;
    then clear what killed exports left in the parent."""
    parent = os.path.dirname(out_dir)
    existing = parent
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "a link to nothing" if os.path.islink(existing) else "a file, not a folder"
        raise ExportError(f"cannot write --out {out_dir}: {existing} is {what}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=parent))
        remove_stale_temps(parent)
    except OSError as e:
        raise ExportError(f"cannot write --out {out_dir}: {e.strerror} ({e.filename or parent})") from None


def make_temp_dir(out_dir):
    """The temp folder beside out_dir, marked INCOMPLETE until the export is done."""
    parent = os.path.dirname(out_dir)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary folder
    with open(os.path.join(tmp, INCOMPLETE), "w", encoding="utf-8") as f:
        f.write("estella export is writing this folder; it is not an export until it is renamed\n")
    return tmp


def remove_stale_temps(parent):
    """Clear what exports killed in this parent left: their temp folders (marked INCOMPLETE, or a
    finished export never swapped in, or an old one swapped out) are removed, and an old export moved
    aside whose --out is missing is put back. Only folders of processes that are gone are touched."""
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        pid = _pid(name)
        if pid is None or os.path.islink(path) or not os.path.isdir(path) or process_alive(pid):
            continue
        if name.startswith(OLD_PREFIX):
            _restore_or_remove_old(parent, path)
        elif os.path.isfile(os.path.join(path, INCOMPLETE)) or os.path.isfile(os.path.join(path, MANIFEST)):
            shutil.rmtree(path, ignore_errors=True)


def _pid(name):
    for prefix in (TMP_PREFIX, OLD_PREFIX):
        if name.startswith(prefix):
            pid = name[len(prefix):].split("-", 1)[0]
            return int(pid) if pid.isdigit() else None
    return None


def _restore_or_remove_old(parent, path):
    old = os.path.join(path, "export")
    try:
        with open(os.path.join(path, OLD_NAME_FILE), encoding="utf-8") as f:
            target = f.read().strip()
    except OSError:
        target = ""
    if (target and os.sep not in target and target not in (".", "..") and os.path.isdir(old)
            and not os.path.lexists(os.path.join(parent, target))):
        os.rename(old, os.path.join(parent, target))
    shutil.rmtree(path, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(new, target, force):
    """Put the finished folder `new` at `target`; an old export there (checked by check_target) is
    swapped out atomically where the kernel can, else moved aside first and put back on failure."""
    if not os.path.lexists(target):
        reached("before-rename")
        os.rename(new, target)
        return
    check_target(target, force)  # again: it may have changed while we worked
    reached("before-swap")
    if _exchange(new, target):  # new now holds the old export, still named as our temp folder
        reached("after-swap")
        shutil.rmtree(new)
        return
    parent = os.path.dirname(target)
    old = tempfile.mkdtemp(prefix=f"{OLD_PREFIX}{os.getpid()}-", dir=parent)
    with open(os.path.join(old, OLD_NAME_FILE), "w", encoding="utf-8") as f:
        f.write(os.path.basename(target))
    os.rename(target, os.path.join(old, "export"))
    reached("old-moved-aside")
    try:
        os.rename(new, target)
    except OSError:
        os.rename(os.path.join(old, "export"), target)
        raise
    shutil.rmtree(old)


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2); False where the kernel or libc cannot."""
    if os.environ.get("ESTELLA_TEST_NO_EXCHANGE"):  # tests only: the fallback path
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot exchange
        return False
    raise OSError(error, os.strerror(error), b)
