"""Mount the sandbox's writable places, bounded in bytes *and* files, then exec bubblewrap.

Run as a script, before bubblewrap: ``python -I -S scratchns.py SPEC -- bwrap ...``. It enters a
new user and mount namespace (its own, invisible to the host; the mounts vanish with it), mounts
one tmpfs per entry of ``SPEC`` (JSON: ``{"mounts": [{"path": P, "size": BYTES, "inodes": N,
"dirs": [...]}]}``) with ``size=`` and ``nr_inodes=`` (which bubblewrap's ``--size`` cannot set),
makes the ``dirs`` in it, and execs the rest of its command line. bubblewrap then binds those
folders into the sandbox. Standard library only; nothing of the grader is imported. Exit status
125 with a message on stderr when a step fails (the caller's probe then uses ``--size`` alone).
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18


def _fail(what: str, errno: int) -> None:
    sys.stderr.write(f"scratchns: {what}: {os.strerror(errno)}\n")
    sys.exit(125)


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


def _mount(libc, mount: dict) -> None:
    options = f"size={int(mount['size'])},nr_inodes={int(mount['inodes'])},mode=0700".encode()
    if libc.mount(b"tmpfs", os.fsencode(mount["path"]), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        _fail(f"mount a tmpfs on {mount['path']}", ctypes.get_errno())
    for d in mount.get("dirs", []):
        os.mkdir(os.path.join(mount["path"], d), 0o700)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: scratchns.py SPEC -- COMMAND ...\n")
        sys.exit(2)
    spec = json.loads(argv[0])
    libc = ctypes.CDLL(None, use_errno=True)
    _enter_namespaces(libc)
    for mount in spec["mounts"]:
        _mount(libc, mount)
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
