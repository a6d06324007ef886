"""Mount the sandbox's writable places, bounded in bytes *and* files, then exec bubblewrap.

Run as a script, before bubblewrap: ``python -I -S scratchns.py PATH BYTES FILES DIR,DIR -- bwrap
...``. It enters a new user and mount namespace (its own, invisible to the host; the mount vanishes
with it), mounts a tmpfs on the empty folder ``PATH`` with ``size=BYTES`` and ``nr_inodes=FILES``
(which bubblewrap's ``--size`` cannot set), makes the folders ``DIR`` in it, and execs the rest of
its command line. bubblewrap then binds those folders into the sandbox. Standard library only
(ctypes; no json: it starts in about 20 ms); nothing of the grader is imported. Exit status 125
with a message on stderr when a step fails (the caller's probe then uses ``--size`` alone).
"""

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18


def _fail(what: str, errno: int) -> None:
    sys.stderr.write(f"scratchns: {what}: {os.strerror(errno)}\n")
    sys.exit(125)  # grader.runtime.bwrap.SCRATCH_HELPER_FAILED (this script imports nothing of the grader)


def _enter_namespaces(libc) -> None:
    """A user namespace mapping only our own uid/gid, owning a private mount namespace."""
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        _fail("unshare", ctypes.get_errno())
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # nothing propagates to the host
        _fail("make / private", ctypes.get_errno())


def _mount(libc, path: str, size: int, inodes: int, dirs: list[str]) -> None:
    options = f"size={size},nr_inodes={inodes},mode=0700".encode()
    if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        _fail(f"mount a tmpfs on {path}", ctypes.get_errno())
    for d in dirs:
        os.mkdir(os.path.join(path, d), 0o700)


def main(argv: list[str]) -> None:
    if len(argv) < 6 or argv[4] != "--":
        sys.stderr.write("usage: scratchns.py PATH BYTES FILES DIR,DIR -- COMMAND ...\n")
        sys.exit(2)
    path, size, inodes, dirs = argv[0], int(argv[1]), int(argv[2]), [d for d in argv[3].split(",") if d]
    libc = ctypes.CDLL(None, use_errno=True)
    _enter_namespaces(libc)
    _mount(libc, path, size, inodes, dirs)
    os.execvp(argv[5], argv[5:])


if __name__ == "__main__":
    main(sys.argv[1:])
