"""The sandbox ("jail") that every piece of student code runs in.

A jailed command is started as ``python -I -m course_lib.autograde.jail SPEC.json``, where the
JSON file is a :class:`JailSpec`. That launcher must run as root (the grader does); it

1. unshares new mount, PID, IPC and UTS namespaces (and a network namespace unless the spec
   shares the caller's, as the notebook kernel does: the grader's worker already lives in a
   private network namespace whose only interface is loopback);
2. forks: the child is PID 1 of the new PID namespace, so when it exits every process the
   student started (double-forked daemons included) is killed by the kernel;
3. builds a new root file system on a small tmpfs holding only what is listed: the system
   (``/usr`` and its merged-/usr symlinks), the Python installation and virtualenv, optionally
   ``course_lib``, read-only and ``nosuid``; a fresh ``/proc``; a few device nodes; a private
   ``/tmp``; and a size-limited tmpfs working directory filled with a copy of the staged files.
   The course root, ``solutions/``, the gradebook, other students' folders, the instructor's
   home and every other path simply do not exist in it (``pivot_root``, old root detached);
4. sets resource limits (CPU seconds, address space, file size, processes, open files, no
   core files), drops every capability (bounding set included), switches to an unprivileged
   uid leased by the worker (:func:`lease_uid`: no two workers share one), sets
   ``no_new_privs`` and a parent-death signal, and
   executes the command with a clean environment (only what the spec lists), stdin from
   ``/dev/null``, stdout/stderr into a log file whose size the file limit caps, and SIGCHLD
   ignored (exited children are reaped at once: killed strays never linger as zombies).

The launcher's outer half stays outside, waits, and exits with the child's status (128 + signal
if it was killed). It ignores SIGINT, which jupyter_client sends to the whole process group to
interrupt a kernel, and turns SIGTERM into SIGKILL of the jail. It dies with its own parent
(``PR_SET_PDEATHSIG``), and the jail dies with it, so a killed grader leaves nothing behind.

With ``sandbox: false`` (the instructor's explicit ``--no-sandbox``) only the limits, the clean
environment and a scratch working directory apply: no namespaces, no privilege drop.

Linux only; standard library only (``ctypes`` for the system calls Python 3.11 does not wrap).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

SETUP_FAILED_EXIT = 125  # the launcher's exit status when the jail could not be built
JAIL_HOME = "/home/student"
SANDBOX_UID_BASE = 61000  # sandbox uids are leased from [base, base + SANDBOX_UIDS)
SANDBOX_UIDS = 1000
UID_LOCK_DIR = "/run/lock/course-autograde"


@dataclasses.dataclass
class Limits:
    """Per-process limits inside the jail (``setrlimit``)."""

    cpu_s: int = 300  # RLIMIT_CPU: SIGKILL after this much CPU time
    memory_mb: int = 3072  # RLIMIT_AS: allocations beyond it fail (MemoryError)
    file_mb: int = 64  # RLIMIT_FSIZE: no file (the log included) grows beyond it
    nproc: int = 64  # RLIMIT_NPROC: processes + threads of the jail's uid
    nofile: int = 256  # RLIMIT_NOFILE


@dataclasses.dataclass
class JailSpec:
    argv: list[str]
    env: dict[str, str]
    log_path: str  # stdout and stderr of the jailed command (host path)
    stage_dir: str | None = None  # regular files copied into the working directory
    ro_paths: list[str] = dataclasses.field(default_factory=list)  # visible read-only, same path
    binds: list[list] = dataclasses.field(default_factory=list)  # [host, inside, writable]
    uid: int = SANDBOX_UID_BASE
    new_net: bool = True  # False: share the caller's network namespace
    loopback: bool = False  # bring "lo" up in a new network namespace
    limits: Limits = dataclasses.field(default_factory=Limits)
    work_mb: int = 256  # size of the working directory (tmpfs)
    tmp_mb: int = 256  # size of /tmp and of /dev/shm
    sandbox: bool = True  # False only with the instructor's explicit --no-sandbox
    scratch_dir: str | None = None  # --no-sandbox: the host directory used as working directory
    parent_pid: int | None = None  # the process that started the launcher: if it is gone, do nothing

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "JailSpec":
        data = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        return cls(**data)


class SandboxUnavailable(RuntimeError):
    """The machine cannot build the jail (not root, no namespaces, ...)."""


# ---- sandbox uids ----------------------------------------------------------------------------

_leases: dict[int, int] = {}  # uid -> fd of its lock file, held while this process lives


def lease_uid() -> int:
    """An unprivileged uid no other grading process on this machine is using, held (by an
    ``flock`` on a lock file) until this process exits. Each worker takes one: its jails run as
    that uid, their process limit is its own, and killing "every process of my uid" can never
    touch another worker's or another grader run's sandboxes."""
    lock_dir = UID_LOCK_DIR if os.access(os.path.dirname(UID_LOCK_DIR), os.W_OK) else \
        os.path.join(tempfile.gettempdir(), "course-autograde-uids")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UIDS):
        if uid in _leases:
            continue
        fd = os.open(os.path.join(lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _leases[uid] = fd
        return uid
    raise SandboxUnavailable(f"all {SANDBOX_UIDS} sandbox uids are in use")


def release_uid(uid: int) -> None:
    fd = _leases.pop(uid, None)
    if fd is not None:
        os.close(fd)


# ---- paths a Python process needs ---------------------------------------------------------


def python_paths() -> list[str]:
    """Installation directories the interpreter running this code needs, read-only."""
    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    # Keep only outermost directories.
    out: list[str] = []
    for p in sorted(os.path.realpath(x) for x in paths):
        if not any(p == q or p.startswith(q + os.sep) for q in out):
            out.append(p)
    return out


def course_lib_path() -> str:
    """The ``course_lib`` package directory (bound read-only where the notebook needs it)."""
    return str(Path(__file__).resolve().parent.parent)


def base_env(home: str = JAIL_HOME) -> dict[str, str]:
    """The whole environment of a jailed process: nothing of the instructor's leaks in."""
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "USER": "student",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
        "JUPYTER_DATA_DIR": "/tmp/jupyter-data",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    for passthrough in ("TRITON_INTERPRET", "COURSE_LIB_BACKEND"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env


# ---- system calls -------------------------------------------------------------------------

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _check(ret: int, what: str) -> int:
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _unshare(flags: int) -> None:
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_lib().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _umount2(target: str, flags: int) -> None:
    _check(_lib().umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def _prctl(option: int, arg: int) -> int:
    return _lib().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _pivot_root(new_root: str, put_old: str) -> None:
    nr = SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_lib().syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()), "pivot_root")


def loopback_up() -> None:
    """Bring the loopback interface of the current network namespace up (SIOCSIFFLAGS)."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sh14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14s", b"lo", flags | IFF_UP, b"\0" * 14))


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    _prctl(PR_SET_PDEATHSIG, sig)


def parent_gone(lifeline: int) -> bool:
    """For a process whose parent may have died before :func:`set_parent_death_signal` took
    effect, where ``getppid()`` cannot tell (the first process of a PID namespace reads 0):
    ``lifeline`` is the read end of a pipe whose only write end the parent holds and never
    writes to, so it polls readable (end of file) exactly once the parent has died."""
    return bool(select.select([lifeline], [], [], 0)[0])


PRIVATE_MOUNTS = False  # True once this process has its own mount namespace


def enter_private_network_and_mounts() -> None:
    """For the grader's worker: a network namespace with only loopback (up), and a private mount
    namespace so that its tmpfs mounts vanish with it. Call first thing, single-threaded."""
    global PRIVATE_MOUNTS
    _unshare(CLONE_NEWNET | CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    PRIVATE_MOUNTS = True
    loopback_up()


def private_tmpfs(path: str | os.PathLike, size_mb: int, uid: int) -> bool:
    """Mount a size-limited tmpfs owned by ``uid`` at ``path`` if this process has a private
    mount namespace (a worker); False (nothing mounted) otherwise."""
    if not PRIVATE_MOUNTS:
        return False
    _mount("tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={size_mb}m,nr_inodes=2000,mode=0700,uid={uid},gid={uid}")
    return True


def unmount(path: str | os.PathLike) -> None:
    try:
        _umount2(str(path), MNT_DETACH)
    except OSError:
        pass


# ---- building the jail (runs in the child, as root, in the new namespaces) --------------


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(host: str, inside: str, root: str, writable: bool = False, dev: bool = False) -> None:
    target = root + inside
    if os.path.isdir(host):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(host, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if dev else MS_NODEV) | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


def _tmpfs(target: str, size_mb: int, uid: int, mode: str = "0700", noexec: bool = False) -> None:
    _mkdirs(target)
    flags = MS_NOSUID | MS_NODEV | (MS_NOEXEC if noexec else 0)
    _mount("tmpfs", target, "tmpfs", flags, f"size={size_mb}m,nr_inodes=20000,mode={mode},uid={uid},gid={uid}")


def _copy_stage(stage: str, dest: str, uid: int) -> None:
    """Copy regular files and directories (never symlinks or devices) into the working dir."""
    for dirpath, dirnames, filenames in os.walk(stage, followlinks=False):
        rel = os.path.relpath(dirpath, stage)
        target_dir = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(target_dir, exist_ok=True)
        os.chown(target_dir, uid, uid)
        for name in filenames:
            src = os.path.join(dirpath, name)
            st = os.lstat(src)
            if not stat.S_ISREG(st.st_mode):
                continue
            dst = os.path.join(target_dir, name)
            shutil.copyfile(src, dst, follow_symlinks=False)
            os.chown(dst, uid, uid)
            os.chmod(dst, 0o600)


def _build_root(spec: JailSpec, root: str) -> None:
    uid = spec.uid
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,nr_inodes=4000,mode=0755")
    # The scratch file systems first: a read-only bind below (a virtualenv or checkout under
    # /tmp, say) must land on top of them, not be hidden by a tmpfs mounted afterwards.
    _tmpfs(root + "/tmp", spec.tmp_mb, uid, mode="1777")
    _tmpfs(root + JAIL_HOME, spec.work_mb, uid, mode="0700")
    # The system, with /usr-merge symlinks recreated.
    _bind("/usr", "/usr", root)
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host):
            _bind(host, host, root)
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/sys/devices/system/cpu"):
        if os.path.exists(path):
            _bind(path, path, root)
    for path in spec.ro_paths:
        _bind(path, path, root)
    for host, inside, writable in spec.binds:
        _bind(host, inside, root, writable=bool(writable))
    _mkdirs(root + "/etc")
    with open(root + "/etc/passwd", "w") as f:
        f.write(f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nstudent:x:{uid}:{uid}:student:{JAIL_HOME}:/usr/sbin/nologin\n")
    with open(root + "/etc/group", "w") as f:
        f.write(f"root:x:0:\nstudent:x:{uid}:\n")
    with open(root + "/etc/hosts", "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost\n")
    # /proc of the new PID namespace; a minimal /dev.
    _mkdirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mkdirs(root + "/dev")
    for dev in ("null", "zero", "full", "random", "urandom"):
        _bind("/dev/" + dev, "/dev/" + dev, root, writable=True, dev=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    _tmpfs(root + "/dev/shm", spec.tmp_mb, uid, mode="1777")
    if spec.stage_dir:
        _copy_stage(spec.stage_dir, root + JAIL_HOME, uid)
    # Switch to it and forget the old root.
    old = root + "/.old_root"
    _mkdirs(old)
    _pivot_root(root, old)
    os.chdir("/")
    _umount2("/.old_root", MNT_DETACH)
    os.rmdir("/.old_root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the skeleton is read-only


def _set_limits(limits: Limits) -> None:
    mb = 1024 * 1024
    for res, value in (
        (resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s)),
        (resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb)),
        (resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb)),
        (resource.RLIMIT_NPROC, (limits.nproc, limits.nproc)),
        (resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)


def _drop_privileges(uid: int) -> None:
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap) != 0 and ctypes.get_errno() not in (errno.EINVAL,):
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap}")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in f if line.startswith("Cap"))}
    if int(caps.get("CapEff", "1"), 16) or int(caps.get("CapPrm", "1"), 16) or int(caps.get("CapBnd", "1"), 16):
        raise RuntimeError(f"capabilities still held after dropping privileges: {caps}")
    if os.getuid() == 0 or os.geteuid() == 0:
        raise RuntimeError("still root after setresuid")


def _child(spec: JailSpec, log_fd: int, err_w: int, root: str | None, lifeline: int) -> None:
    """PID 1 of the jail. Never returns: execs the command or exits."""
    try:
        set_parent_death_signal()
        if parent_gone(lifeline):  # the launcher was killed before the signal was set
            os._exit(SETUP_FAILED_EXIT)
        if spec.sandbox:
            _unshare(CLONE_NEWNS)  # here, not in the launcher, so that pivot_root moves only us
            socket.sethostname("sandbox")
            if spec.new_net and spec.loopback:
                loopback_up()
            _build_root(spec, root)
            workdir = JAIL_HOME
        else:
            workdir = spec.scratch_dir or tempfile.mkdtemp(prefix="nosandbox-")
            if spec.stage_dir:
                _copy_stage(spec.stage_dir, workdir, os.getuid())
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        _set_limits(spec.limits)
        if spec.sandbox:
            _drop_privileges(spec.uid)
            set_parent_death_signal()  # cleared by the uid change; set again
            if parent_gone(lifeline):  # the launcher died while it was cleared: nobody waits for us
                os._exit(SETUP_FAILED_EXIT)
        os.chdir(workdir)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 16)
        os.set_inheritable(err_w, False)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Inherited across exec: children are reaped as they exit, so processes the grader kills
        # (a fork bomb's) do not linger as zombies holding the process limit. The cost: a
        # subprocess's exit status reads as 0 inside the jail.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except BaseException as err:  # noqa: BLE001 - report any failure to the launcher
        try:
            os.write(err_w, f"{type(err).__name__}: {err}".encode()[:4000])
        finally:
            os._exit(SETUP_FAILED_EXIT)


def launch(spec: JailSpec) -> int:
    """The launcher: build the jail, run the command in it, return its exit status."""
    set_parent_death_signal()
    if spec.parent_pid is not None and os.getppid() != spec.parent_pid:
        return SETUP_FAILED_EXIT  # the grader died while starting us: nobody wants this jail
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel inside
    log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    err_r, err_w = os.pipe()
    root = None
    if spec.sandbox:
        flags = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if spec.new_net else 0)
        try:
            _unshare(flags)
        except OSError as err:
            sys.stderr.write(f"sandbox: cannot create namespaces ({err}); run as root, or pass --no-sandbox\n")
            return SETUP_FAILED_EXIT
        root = tempfile.mkdtemp(prefix="jail-root-")  # a mount point, used only in the child's namespace
    try:
        return _run_child(spec, log_fd, err_r, err_w, root)
    finally:
        if root is not None:
            try:
                os.rmdir(root)
            except OSError:
                pass


def _run_child(spec: JailSpec, log_fd: int, err_r: int, err_w: int, root: str | None) -> int:
    life_r, life_w = os.pipe()  # the child's way to see that this launcher has died (parent_gone)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        os.close(life_w)
        _child(spec, log_fd, err_w, root, life_r)
    os.close(err_w)
    os.close(log_fd)
    os.close(life_r)  # life_w stays open, unwritten, until this process exits

    def _kill(signum, frame):  # SIGTERM/SIGHUP: the jail goes, at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, _kill)
    signal.signal(signal.SIGHUP, _kill)
    failure = b""
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        failure += chunk
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return SETUP_FAILED_EXIT
        except InterruptedError:
            continue
    if failure:
        sys.stderr.write(f"sandbox: setting up the jail failed: {failure.decode(errors='replace')}\n")
        return SETUP_FAILED_EXIT
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _pids_of_uid(uid: int, except_children_of: int | None = None, alive_only: bool = False) -> list[int]:
    """The processes of ``uid``: all of them (zombies, too, count against its process limit until
    they are reaped, which for an orphan is up to PID 1, in its own time), or with
    ``alive_only`` those that have not exited."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) != uid:
                continue
            if except_children_of is not None and int(fields["PPid"]) == except_children_of:
                continue
            if (except_children_of is not None or alive_only) and fields.get("State", "").strip().startswith("Z"):
                continue  # already dead, waiting for its parent to reap it
            pids.append(int(entry.name))
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return pids


def stop_strays(uid: int, launcher_pid: int) -> int:
    """Kill the processes of the sandbox ``uid`` other than the jail's main process (the child of
    ``launcher_pid``): what a notebook cell forked and left running. Returns how many."""
    if uid == 0 or os.geteuid() != 0:
        return 0
    killed: set[int] = set()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # strays may still be forking while we kill them
        pids = _pids_of_uid(uid, except_children_of=launcher_pid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        killed.update(pids)
        time.sleep(0.02)
    return len(killed)


def clear_uid(uid: int, timeout: float = 15.0) -> bool:
    """Kill every process still running as the sandbox ``uid`` and wait until they are gone.

    Each worker slot has its own uid, so this only ever hits what that slot's earlier jails left
    (a killed kernel's forked children can take a moment to exit; until they do they count
    against the next jail's process limit). Returns False if some are still there at the end."""
    if uid == 0 or os.geteuid() != 0:
        return True
    deadline = time.monotonic() + timeout
    while True:
        pids = _pids_of_uid(uid)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def launcher_argv(spec_path: str | os.PathLike) -> list[str]:
    """The command that runs a jail described by the JSON file at ``spec_path``."""
    return [sys.executable, "-I", "-m", "course_lib.autograde.jail", str(spec_path)]


def write_spec(spec: JailSpec, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(spec.to_json(), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def describe_exit(code: int | None, limits: Limits | None = None) -> str:
    """A reason, for feedback, from a jailed command's exit status."""
    if code is None:
        return "did not finish"
    if code == SETUP_FAILED_EXIT:
        return "the sandbox could not be set up"
    if code > 128:
        sig = code - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGKILL:
            return "killed (time or CPU limit reached)" if limits is None else (
                f"killed (time limit, or the CPU limit of {limits.cpu_s} s)")
        if sig == signal.SIGSEGV:
            return "crashed with a segmentation fault"
        if sig == signal.SIGXCPU:
            return "stopped: CPU time limit reached"
        if sig == signal.SIGXFSZ:
            return "stopped: file size limit reached"
        return f"killed by signal {name}"
    return f"exited with status {code}"


def probe(uid: int | None = None, loopback: bool = True) -> None:
    """Build a jail once and check what it can see; raise :class:`SandboxUnavailable` if the
    machine cannot (not root, namespaces disabled, ...)."""
    if sys.platform != "linux":
        raise SandboxUnavailable("the sandbox needs Linux namespaces; pass --no-sandbox to grade without it")
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "the sandbox needs root (it creates mount, PID and network namespaces and drops to an "
            "unprivileged uid); run the grader as root, or pass --no-sandbox to grade without it")
    leased = uid is None
    uid = lease_uid() if leased else uid
    try:
        _probe(uid, loopback)
    finally:
        if leased:
            release_uid(uid)


def _probe(uid: int, loopback: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="jail-probe-") as tmp:
        code = (
            "import os, socket, json\n"
            "print(json.dumps({'uid': os.getuid(), 'pid': os.getpid(), 'cwd': os.getcwd(),"
            " 'course': os.path.exists(%r), 'net': sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else None}))\n"
        ) % str(Path(course_lib_path()).parent / "nbgrader_config.py")
        spec = JailSpec(argv=[sys.executable, "-I", "-c", code], env=base_env(), log_path=f"{tmp}/log",
                        ro_paths=python_paths(), uid=uid, new_net=True, loopback=loopback,
                        limits=Limits(cpu_s=30, memory_mb=1024))
        path = write_spec(spec, f"{tmp}/spec.json")
        proc = subprocess.run(launcher_argv(path), capture_output=True, text=True, timeout=60)
        log = Path(f"{tmp}/log").read_text(errors="replace") if Path(f"{tmp}/log").exists() else ""
        if proc.returncode != 0:
            raise SandboxUnavailable(f"the sandbox does not work on this machine: {proc.stderr.strip() or log.strip()}"
                                     " (pass --no-sandbox to grade without it)")
        try:
            seen = json.loads(log.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SandboxUnavailable(f"the sandbox probe printed nothing usable: {log[-500:]!r}") from None
        if seen["uid"] != uid or seen["pid"] != 1 or seen["course"] or seen["cwd"] != JAIL_HOME:
            raise SandboxUnavailable(f"the sandbox probe saw more than it should: {seen}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -I -m course_lib.autograde.jail SPEC.json\n")
        return 2
    spec = JailSpec.from_json(Path(argv[0]).read_text(encoding="utf-8"))
    return launch(spec)


if __name__ == "__main__":
    sys.exit(main())
