"""How the apps' threads are scheduled: names the OS shows (`top -H`, `ps -L`) and `--rt-priority`.

On two cores a paced 1080p60 pipeline keeps the CPUs about 60 % busy, yet under the kernel's fair
scheduler a stage is preempted whenever another thread wakes (a decoder thread, the view's JPEG
encoder, the next frame's resize), so the slowest frames miss their 16.7 ms and are dropped.  With
``--rt-priority N`` the capture, decode and stage threads run ``SCHED_FIFO`` at priority N: a stage
that has a frame runs until it hands the frame on, and the view's encoder, the web server and
everything else on the machine take the time left over.  The kernel's real-time throttling
(``/proc/sys/kernel/sched_rt_runtime_us``, 95 % by default) still keeps the rest of the system alive.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from medge.common.errors import UsageError

_PR_SET_NAME = 15  # prctl(2)


def set_os_thread_name(name: str) -> None:
    """Give the calling thread `name` (first 15 bytes) in the OS, as ``top -H`` and ``/proc/*/task/*/comm``
    show it; a no-op where prctl is missing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def thread_scheduling() -> str:
    """The calling thread's policy as the report prints it: ``SCHED_FIFO 10`` or ``SCHED_OTHER``."""
    if not hasattr(os, "sched_getscheduler"):
        return "default"
    policy = os.sched_getscheduler(0)
    if policy == os.SCHED_FIFO:
        return f"SCHED_FIFO {os.sched_getparam(0).sched_priority}"
    return {getattr(os, "SCHED_RR", -1): "SCHED_RR", getattr(os, "SCHED_BATCH", -1): "SCHED_BATCH",
            getattr(os, "SCHED_IDLE", -1): "SCHED_IDLE"}.get(policy, "SCHED_OTHER")


def check_realtime(priority: int | None) -> None:
    """Raise what `realtime_threads` would raise for `priority`, now (before any port or device is opened)."""
    with realtime_threads(priority):
        pass


@contextlib.contextmanager
def realtime_threads(priority: int | None) -> Iterator[None]:
    """Run the calling thread, and every thread it starts meanwhile (threads inherit the policy on
    Linux: stage threads, a video decoder's own threads), at ``SCHED_FIFO`` `priority`; the calling
    thread gets its own policy back on exit.  ``None`` changes nothing.

    Raises `UsageError` (one line, with the fix) when the priority is out of range or this user may
    not use real-time scheduling."""
    if priority is None:
        yield
        return
    if not hasattr(os, "sched_setscheduler"):
        raise UsageError("--rt-priority needs Linux real-time scheduling (SCHED_FIFO), which this OS lacks; "
                         "leave --rt-priority out")
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise UsageError(f"--rt-priority must be in {low}..{high} (got {priority})")
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        if limit == resource.RLIM_INFINITY or limit >= priority:  # allowed by the limit, refused by the cgroup
            raise UsageError(f"--rt-priority {priority}: the kernel refused real-time scheduling although RLIMIT_RTPRIO "
                             f"allows it: this process's cgroup has no real-time budget (cpu.rt_runtime_us, on kernels "
                             "with CONFIG_RT_GROUP_SCHED); give it one, or leave --rt-priority out") from None
        raise UsageError(f"--rt-priority {priority}: this user may not use real-time scheduling (its RLIMIT_RTPRIO "
                         f"is {limit}); allow it with `ulimit -r {priority}` (or LimitRTPRIO={priority} in a systemd "
                         "unit, or CAP_SYS_NICE), or leave --rt-priority out") from None
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)
