"""The first process inside a grading sandbox: limits, privileges, then ``exec`` of the kernel.

Run by :mod:`course_utils.sandbox` as ``python -I sandbox_launch.py [options] -- COMMAND...`` (by file path, so it
needs nothing but the standard library). In order, it

1. forgets the grader's process ids (``JPY_PARENT_PID``: in a new PID namespace the kernel's parent is pid 1, and
   ipykernel would shut itself down thinking its parent died),
2. starts a new session, so an interrupt (``interrupt_mode: message``) reaches the kernel and its children only,
3. sets resource limits (address space, file size, processes, CPU seconds, no core dumps),
4. when it runs as root and ``--uid`` is not 0: hands the scratch folder to that uid, then drops to it for good
   (``setgroups([])``, ``setgid``, ``setuid``: no capabilities survive),
5. sets ``no_new_privs``, so no setuid program can give privileges back,
6. replaces itself with COMMAND (the kernel).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys

_PR_SET_NO_NEW_PRIVS = 38


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    try:
        old_soft, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # never ask for more than we have
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError) as err:  # pragma: no cover - depends on the machine
        print(f"sandbox: could not set limit {which}: {err}", file=sys.stderr)


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: sandbox_launch.py [options] -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="sandbox_launch")
    parser.add_argument("--uid", type=int, default=-1, help="drop to this uid when started as root")
    parser.add_argument("--gid", type=int, default=-1)
    parser.add_argument("--own", action="append", default=[], help="folders handed to --uid before dropping")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit (0: none)")
    parser.add_argument("--file-mb", type=int, default=0, help="largest file the kernel may write (0: none)")
    parser.add_argument("--nproc", type=int, default=0, help="processes of the uid (0: none)")
    parser.add_argument("--cpu-s", type=int, default=0, help="CPU seconds (0: none)")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        raise SystemExit("sandbox_launch: no command after --")

    for name in ("JPY_PARENT_PID", "JPY_SESSION_NAME"):
        os.environ.pop(name, None)
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (bwrap --new-session)

    _limit(resource.RLIMIT_CORE, 0)
    mb = 1024 * 1024
    if args.memory_mb:
        _limit(resource.RLIMIT_AS, args.memory_mb * mb)
    if args.file_mb:
        _limit(resource.RLIMIT_FSIZE, args.file_mb * mb)
    if args.cpu_s:
        _limit(resource.RLIMIT_CPU, args.cpu_s, args.cpu_s + 5)

    if os.getuid() == 0 and args.uid > 0:
        gid = args.gid if args.gid > 0 else args.uid
        for path in args.own:
            _chown_tree(path, args.uid, gid)
        if args.nproc:
            _limit(resource.RLIMIT_NPROC, args.nproc)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(args.uid)
        if os.getuid() != args.uid or os.geteuid() != args.uid:  # pragma: no cover - paranoia
            raise SystemExit("sandbox_launch: could not drop privileges")
    elif args.nproc:
        _limit(resource.RLIMIT_NPROC, args.nproc)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    os.umask(0o077)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
