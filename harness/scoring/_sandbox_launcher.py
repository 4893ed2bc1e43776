"""Supervisor for one sandboxed program, started by ``harness.scoring.sandbox`` as ``python -I -S <file>``.

It runs in its own interpreter (standard library only, no site packages) so that nothing set up here can
disturb the harness, and it must not import anything from the project. It reads a JSON request on stdin,
runs the program and writes one JSON result line on stdout.

Process layout::

    harness ── launcher (this file; child subreaper; enforces the wall clock)
                 └── reaper (PID 1 of a new PID namespace where one can be made; reaps orphans)
                       └── program (rlimits, no capabilities, Landlock, seccomp; execs argv)

When the reaper exits every process left in its PID namespace is killed by the kernel. Where no PID
namespace can be made, orphans re-parent to the launcher (a child subreaper) and the launcher kills every
process that still descends from it before it reports.
"""

import ctypes
import errno
import json
import os
import resource
import signal
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

# The kernel's "overflow" uid. As root the program's real uid is switched to it so that RLIMIT_NPROC,
# which the kernel never applies to real uid 0, bounds fork bombs.
UNPRIVILEGED_UID = 65534

# Landlock (linux/landlock.h). Only write-like file-system rights are restricted: reading stays allowed.
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
FS_WRITE_FILE = 1 << 1
FS_WRITE_RIGHTS_ABI1 = (
    FS_WRITE_FILE
    | (1 << 4)  # REMOVE_DIR
    | (1 << 5)  # REMOVE_FILE
    | (1 << 6)  # MAKE_CHAR
    | (1 << 7)  # MAKE_DIR
    | (1 << 8)  # MAKE_REG
    | (1 << 9)  # MAKE_SOCK
    | (1 << 10)  # MAKE_FIFO
    | (1 << 11)  # MAKE_BLOCK
    | (1 << 12)  # MAKE_SYM
)
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
NET_BIND_AND_CONNECT_TCP = 0b11  # ABI 4
SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11  # ABI 6

# Seccomp: syscall numbers per architecture, and the audit architecture tag the filter checks first.
SECCOMP_SYSCALLS = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "denied": {
            "socket": 41,
            "ptrace": 101,
            "chmod": 90,
            "fchmod": 91,
            "chown": 92,
            "fchown": 93,
            "lchown": 94,
            "fchownat": 260,
            "fchmodat": 268,
            "unshare": 272,
            "setns": 308,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "pidfd_send_signal": 424,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "fchmodat2": 452,
        },
        "signalling": {"kill": 62, "tkill": 200, "tgkill": 234},
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "denied": {
            "socket": 198,
            "ptrace": 117,
            "fchmod": 52,
            "fchmodat": 53,
            "fchownat": 54,
            "fchown": 55,
            "unshare": 97,
            "setns": 268,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "pidfd_send_signal": 424,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "fchmodat2": 452,
        },
        "signalling": {"kill": 129, "tkill": 130, "tgkill": 131},
    },
}
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_EPERM = 0x00050000 | 1
X32_SYSCALL_BIT = 0x40000000


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def checked(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, *args: int) -> None:
    # prctl and syscall are variadic: every argument goes as a full machine word.
    words = (option, *args, *[0] * (4 - len(args)))
    checked(libc.prctl(*(ctypes.c_ulong(word) for word in words)), f"prctl({option})")


def syscall(number: int, *args) -> int:
    words = [arg if isinstance(arg, bytes) else ctypes.c_long(arg) for arg in (number, *args)]
    return libc.syscall(*words)


def count_tasks_of_real_uid(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is ``uid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue  # the process exited while we looked
        if int(fields["Uid"].split()[0]) == uid:
            total += int(fields["Threads"])
    return total


def set_resource_limits(limits: dict, real_uid: int) -> None:
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    # RLIMIT_NPROC is checked against every task of the real uid, so the budget is added to what exists.
    nproc = count_tasks_of_real_uid(real_uid) + limits["processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def drop_root_privileges() -> None:
    """Empty the capability bounding set, so the exec'd program has no capabilities even with euid 0, and
    move the real uid off 0 so RLIMIT_NPROC applies. The effective uid stays 0 so that an interpreter
    installed under a root-only directory can still be read."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresuid(UNPRIVILEGED_UID, 0, 0)


def apply_landlock(work_dir: str) -> bool:
    """Allow file-system writes only beneath ``work_dir`` (and to /dev/null); from ABI 4 deny TCP bind and
    connect, from ABI 6 deny signals to processes outside the sandbox. False where Landlock is missing."""
    abi = syscall(SYS_LANDLOCK_CREATE_RULESET, 0, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        return False
    fs_rights = FS_WRITE_RIGHTS_ABI1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    ruleset = struct.pack(
        "=QQQ",
        fs_rights,
        NET_BIND_AND_CONNECT_TCP if abi >= 4 else 0,
        SCOPE_ABSTRACT_UNIX_AND_SIGNAL if abi >= 6 else 0,
    )[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset_fd = checked(
        syscall(SYS_LANDLOCK_CREATE_RULESET, ruleset, len(ruleset), 0),
        "landlock_create_ruleset",
    )
    file_rights = FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
    for path, rights in ((work_dir, fs_rights), ("/dev/null", file_rights)):
        path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = struct.pack("=Qi", rights, path_fd)
        checked(
            syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, rule, 0),
            f"landlock_add_rule({path})",
        )
        os.close(path_fd)
    checked(syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0), "landlock_restrict_self")
    os.close(ruleset_fd)
    return True


def seccomp_program(arch: dict, protected_pids: set[int]) -> bytes:
    """Classic BPF: deny sockets, ptrace, io_uring, namespace changes, chmod/chown; allow kill/tkill/tgkill
    only towards a positive pid that is not one of ``protected_pids`` (no process groups, no -1)."""
    code: list = []  # (opcode, jump-if-true label, jump-if-false label, k); labels resolve below

    def op(opcode, k, jt=None, jf=None):
        code.append((opcode, jt, jf, k))

    op(BPF_LD_W_ABS, 4)  # seccomp_data.arch
    op(BPF_JEQ_K, arch["audit_arch"], jf="kill")
    op(BPF_LD_W_ABS, 0)  # seccomp_data.nr
    op(BPF_JGE_K, X32_SYSCALL_BIT, jt="deny")
    for number in arch["denied"].values():
        op(BPF_JEQ_K, number, jt="deny")
    for number in arch["signalling"].values():
        op(BPF_JEQ_K, number, jt="check_target")
    op(BPF_RET_K, SECCOMP_RET_ALLOW)
    labels = {"check_target": len(code)}
    op(BPF_LD_W_ABS, 16)  # low 32 bits of args[0]: the target pid
    op(BPF_JEQ_K, 0, jt="deny")
    op(BPF_JGE_K, 0x80000000, jt="deny")  # negative: a process group, or every process for -1
    for pid in sorted(protected_pids):
        op(BPF_JEQ_K, pid, jt="deny")
    op(BPF_RET_K, SECCOMP_RET_ALLOW)
    labels["deny"] = len(code)
    op(BPF_RET_K, SECCOMP_RET_EPERM)
    labels["kill"] = len(code)
    op(BPF_RET_K, SECCOMP_RET_KILL_PROCESS)

    packed = b""
    for index, (opcode, jt, jf, k) in enumerate(code):
        offsets = [0 if label is None else labels[label] - index - 1 for label in (jt, jf)]
        packed += struct.pack("=HBBI", opcode, offsets[0], offsets[1], k)
    return packed


def apply_seccomp(protected_pids: set[int]) -> bool:
    """Install the filter; False where the architecture is not covered or the kernel lacks seccomp."""
    arch = SECCOMP_SYSCALLS.get(os.uname().machine)
    if arch is None:
        return False
    program = seccomp_program(arch, protected_pids)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    try:
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # built without CONFIG_SECCOMP_FILTER
            return False
        raise
    return True


def become_program(request: dict, report_fd: int, in_pid_namespace: bool, launcher_pid: int) -> None:
    """Runs in the forked program process: confine it, then exec the interpreter. Never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        stdin = os.open(request.get("stdin_path") or "/dev/null", os.O_RDONLY)
        stdout = os.open(request["stdout_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stderr = os.open(request["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
            os.close(source)
        os.chdir(request["work_dir"])
        is_root = os.geteuid() == 0
        if is_root:
            # Tools that check access() against the real uid (UNPRIVILEGED_UID below) before writing a
            # temporary file (gcc, ld) would otherwise fall back to /tmp, where Landlock refuses them.
            os.chmod(os.path.dirname(request["work_dir"]), 0o711)
            os.chmod(request["work_dir"], 0o777)
        set_resource_limits(request["limits"], UNPRIVILEGED_UID if is_root else os.getuid())
        layers = ["rlimits", "own-session", "scrubbed-env", "temp-cwd"]
        if is_root:
            drop_root_privileges()
            layers.append("no-capabilities")
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if apply_landlock(request["work_dir"]):
            layers.append("landlock")
        # Inside a PID namespace the only process outside the sandbox that the program can name is the
        # reaper (pid 1); host pids would alias sandbox processes there.
        protected = {1} if in_pid_namespace else {os.getppid(), launcher_pid, *request["protected_pids"]}
        if apply_seccomp(protected):
            layers.append("seccomp")
        os.write(report_fd, json.dumps({"layers": layers}, allow_nan=False).encode() + b"\n")
        os.execve(request["argv"][0], request["argv"], request["env"])
    except BaseException as exc:  # any failure is reported; nothing may unwind past the fork
        os.write(
            report_fd,
            json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}, allow_nan=False).encode() + b"\n",
        )
    os._exit(127)


def run_reaper(request: dict, report_fd: int, in_pid_namespace: bool, launcher_pid: int) -> None:
    """Forks the program, reaps every child (orphans included, as PID 1 must), reports the program's wait
    status and exits, which in a PID namespace kills whatever the program left behind."""
    program_pid = os.fork()
    if program_pid == 0:
        become_program(request, report_fd, in_pid_namespace, launcher_pid)
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid == program_pid:
            report = {"wait_status": status, "cpu_s": usage.ru_utime + usage.ru_stime}
            os.write(report_fd, json.dumps(report, allow_nan=False).encode() + b"\n")
            os._exit(0)


def reap_exited_children() -> dict[int, int]:
    exited = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited[pid] = status


def live_descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                after_name = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, parent = after_name[0], int(after_name[1])
        if state != "Z":
            children.setdefault(parent, []).append(int(entry))
    found, frontier = [], [root_pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found.extend(kids)
        frontier.extend(kids)
    return found


def kill_all_descendants() -> None:
    """SIGKILL everything below this process until nothing is left; a fork bomb that keeps forking while
    we look is caught by the next pass, and RLIMIT_NPROC keeps the passes few."""
    me = os.getpid()
    for _ in range(1000):
        reap_exited_children()
        descendants = live_descendants(me)
        if not descendants:
            return
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    raise RuntimeError("sandboxed processes kept appearing after 1000 kill passes")


def read_reports(report_fd: int) -> dict:
    os.set_blocking(report_fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(report_fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    merged: dict = {}
    for line in data.splitlines():
        merged.update(json.loads(line))
    return merged


def main() -> None:
    request = json.loads(sys.stdin.read())
    started = time.monotonic()
    launcher_pid = os.getpid()
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    namespace_layers = []
    if os.geteuid() == 0 and libc.unshare(ctypes.c_int(CLONE_NEWNET | CLONE_NEWPID)) == 0:
        namespace_layers = ["netns", "pidns"]
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    report_read, report_write = os.pipe()
    reaper_pid = os.fork()
    if reaper_pid == 0:
        os.close(report_read)
        try:
            run_reaper(request, report_write, bool(namespace_layers), launcher_pid)
        finally:
            os._exit(127)
    os.close(report_write)

    deadline = started + request["wall_s"]
    reaper_done = timed_out = False
    while not reaper_done:
        reaper_done = reaper_pid in reap_exited_children()
        remaining = deadline - time.monotonic()
        if not reaper_done and remaining <= 0:
            timed_out = True
            os.kill(reaper_pid, signal.SIGKILL)
            break
        if not reaper_done:
            signal.sigtimedwait([signal.SIGCHLD], remaining)
    kill_all_descendants()

    reports = read_reports(report_read)
    result = {
        "timed_out": timed_out,
        "wall_s": time.monotonic() - started,
        "layers": reports.get("layers", []) + namespace_layers,
        "setup_error": reports.get("setup_error"),
        "cpu_s": reports.get("cpu_s"),
        "returncode": None,
        "signal": None,
    }
    if "wait_status" in reports and not timed_out:
        status = reports["wait_status"]
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        else:
            result["returncode"] = os.WEXITSTATUS(status)
    sys.stdout.write(json.dumps(result, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
