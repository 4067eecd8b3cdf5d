"""--engine-cpus: the engine process on CPUs of its own and the HTTP side on the others (Linux), so
that the HTTP side (and anything else the machine runs) does not take turns with the scheduler on
its core."""

import os

from estella.runtime.errors import EstellaError


def parse_cpus(text, flag="--engine-cpus"):
    """"0", "0-1" or "0,2-3" -> the set of CPU ids, each one this process may use; else an EstellaError
    naming the flag and what is allowed."""
    if not hasattr(os, "sched_setaffinity"):
        raise EstellaError(f"{flag} needs Linux (CPU affinity); leave it out here")
    allowed = os.sched_getaffinity(0)
    what = f"{flag} must be CPU ids this process may use ({compact(allowed)}), as 0 or 0-1 or 0,2-3; got {text!r}"
    cpus = set()
    for part in str(text).split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise EstellaError(what)
        first, last = int(low), int(high) if dash else int(low)
        if first > last:
            raise EstellaError(what)
        cpus.update(range(first, last + 1))
    if not cpus <= allowed:
        raise EstellaError(what)
    return cpus


def compact(cpus):
    """{0, 1, 2, 5} -> "0-2,5"."""
    runs, out = sorted(cpus), []
    for cpu in runs:
        if out and out[-1][1] == cpu - 1:
            out[-1][1] = cpu
        else:
            out.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def keep_process_to(cpus):
    """Every thread of this process on these CPUs from now on (threads it starts later inherit them)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that has just ended
            pass
