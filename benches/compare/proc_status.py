"""Fields of /proc/self/status (Linux), for the comparison scripts' host-memory figures."""


def rss_kib(field):
    """`VmRSS`, `VmHWM`, ... of this process, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)
