"""A slower link for the registry rows (stdlib and iproute2 only).

A network namespace of the bench's own, joined to this one by a veth pair
with private addresses (10.231.K.1 here, 10.231.K.2 there), whose egress
toward us is paced by the kernel's token bucket (`tc qdisc … tbf`) to RATE
bits a second, all connections together, as one network link shares them.
A second `docker-registry` runs inside it on the bench registry's storage,
with an access log of its own, which counts the bytes it served. Requests
go up unpaced: they are small. Nothing leaves the machine: both ends of the
pair are on it.

    with Link(storage_dir, work_dir, 100e6) as link:
        ... docker://{link.host_port}/repo:tag ... link.registry.blob_bytes(mark)

Loopback without it runs at memory speed, which flatters whoever fetches
the most; issue 23 holds the full pass to `skopeo copy` on real links. The
kernel paces, so no process of ours spends a core on it: the stdlib proxy
this replaces did, on a 2-core machine, and so held back the one that
decodes while it fetches (ocimount) more than the one that only writes
(skopeo).
"""
import os
import subprocess

# tbf drops a packet larger than its bucket: at least a TSO segment (64 KiB)
# with room, and at least 4 ms of the rate.
MIN_BURST = 128 * 1024
LATENCY = "100ms"


def ip(*args, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stdout.decode(errors='replace')}")


class Link:
    count = 0

    def __init__(self, storage_dir, work_dir, rate_bits):
        Link.count += 1
        k = (os.getpid() + Link.count) % 250 + 1
        self.ns = f"ocimount-bench-{os.getpid()}-{Link.count}"
        self.host_if, self.ns_if = f"obl{k}h", f"obl{k}n"
        self.here, self.there = f"10.231.{k}.1", f"10.231.{k}.2"
        self.rate = int(rate_bits)
        self.burst = max(MIN_BURST, self.rate // 8 // 250)
        from registry import Registry  # registry.py imports this module
        self.registry = Registry(work_dir, storage=storage_dir, netns=self.ns, addr=self.there)
        self.made = False

    @property
    def host_port(self):
        return f"{self.there}:{self.registry.port}"

    def __enter__(self):
        try:
            ip("ip", "netns", "add", self.ns)
            self.made = True
            ip("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            ip("ip", "link", "set", self.ns_if, "netns", self.ns)
            ip("ip", "addr", "add", f"{self.here}/30", "dev", self.host_if)
            ip("ip", "link", "set", self.host_if, "up")
            ip("ip", "addr", "add", f"{self.there}/30", "dev", self.ns_if, ns=self.ns)
            ip("ip", "link", "set", self.ns_if, "up", ns=self.ns)
            ip("ip", "link", "set", "lo", "up", ns=self.ns)
            ip("tc", "qdisc", "add", "dev", self.ns_if, "root", "tbf", "rate", f"{self.rate}bit",
               "burst", str(self.burst), "latency", LATENCY, ns=self.ns)
            self.registry.start()
        except Exception:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.registry.stop()
        if self.made:
            # Deleting the namespace deletes its end of the pair, and so both.
            subprocess.run(["ip", "netns", "del", self.ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
            self.made = False
        subprocess.run(["ip", "link", "del", self.host_if], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
