#!/usr/bin/env python3
"""The benchmark runner behind scripts/bench.sh (stdlib only; needs root).

  run.py run --bin OCIMOUNT --image DIR --work DIR --out DIR [--reps N] ...
  run.py report JSON                re-render the .md and .svg beside JSON
  run.py ttfb FILE | randread FILE N SEED | statstorm LIST   (timed children)

Every system gets the same operations on the same image, in one run, N
repetitions each; the medians go to OUT/<host>-<date>.{json,md,svg}.
Every mount this makes is unmounted on the way out, whatever happens.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import fleet  # the fleet-behind-a-mirror rows: scripts/bench/fleet.py
import registry  # the registry rows: scripts/bench/registry.py
import scale  # issue 13's rows (many files, container start, fill): scripts/bench/scale.py

# ---------------------------------------------------------------- children
# Timed in a fresh process, the interpreter start excluded.


def child_ttfb(path):
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        f.read(1)
    print(f"{time.perf_counter() - t0:.6f}")


def child_randread(path, n, seed, from_open="0"):
    """With from_open "1" the time includes the file's lookup and open
    (the first touch of a tree just mounted)."""
    t_open = time.perf_counter()
    size = os.path.getsize(path)
    rng = random.Random(int(seed))
    offsets = [rng.randrange(max(1, size // 4096)) * 4096 for _ in range(int(n))]
    fd = os.open(path, os.O_RDONLY)
    t0 = t_open if from_open == "1" else time.perf_counter()
    for off in offsets:
        os.pread(fd, 4096, off)
    elapsed = time.perf_counter() - t0
    os.close(fd)
    print(f"{elapsed:.6f}")


def child_statstorm(listfile):
    with open(listfile, "rb") as f:
        paths = f.read().split(b"\n")[:-1]
    t0 = time.perf_counter()
    for p in paths:
        try:
            os.lstat(p)
        except OSError:
            pass
    print(f"{time.perf_counter() - t0:.6f}")


# ------------------------------------------------------------------ helpers
TIMEOUT = 1800.0


def run(cmd, timeout=None, ok=(0,), **kw):
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, timeout=timeout or TIMEOUT, **kw)
    if p.returncode not in ok:
        err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{err[-2000:]}")
    return p


def timed(cmd, **kw):
    t0 = time.perf_counter()
    run(cmd, **kw)
    return time.perf_counter() - t0


def child(*args):
    p = run([sys.executable, os.path.abspath(__file__), *map(str, args)], stdout=subprocess.PIPE)
    return float(p.stdout.decode().strip())


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def disk_usage(path):
    """Bytes of disk blocks under path (sparse files count what they hold)."""
    total = 0
    for d, _dirs, files in os.walk(path):
        for name in files + [""]:
            try:
                total += os.lstat(os.path.join(d, name)).st_blocks * 512
            except OSError:
                pass
    return total


def wait_until(cond, timeout, what):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def pids_with(fragment):
    """Processes whose command line contains fragment (our mountpoints are unique)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if fragment.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def image_layers(layout):
    """[(blob path, compression, size)] bottom first, for the only manifest."""
    def blob(d):
        return os.path.join(layout, "blobs", "sha256", d.split(":")[1])
    with open(os.path.join(layout, "index.json")) as f:
        doc = json.load(f)
    while "manifests" in doc:
        with open(blob(doc["manifests"][0]["digest"])) as f:
            doc = json.load(f)
    out = []
    for layer in doc["layers"]:
        mt = layer["mediaType"]
        comp = "zstd" if "zstd" in mt else ("none" if mt.endswith(".tar") else "gzip")
        out.append((blob(layer["digest"]), comp, layer["size"]))
    return out


DECOMPRESS = {"gzip": ["zcat"], "zstd": ["zstdcat"], "none": ["cat"]}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def mounted(path):
    return os.path.ismount(path)


# ------------------------------------------------------------------ systems
class System:
    """A way to get the image's rootfs as a directory tree."""
    key = label = ""
    root = ""
    has_warm = True

    def __init__(self, bench):
        self.b = bench
        self.dir = os.path.join(bench.work, self.key)
        self.mnt = os.path.join(self.dir, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.root = self.mnt

    def cold(self):            # from nothing to a tree, page cache dropped: seconds
        raise NotImplementedError

    def warm(self):            # again, with whatever state the system keeps
        self.stop()
        return self.mount()

    def mount(self):
        raise NotImplementedError

    def fresh_data(self):      # a tree whose data cache (if any) is empty
        self.warm()

    def drop_data(self):       # unmounted: empty the data cache, keep the index
        pass

    def stop(self):
        pass

    def pid(self):
        return None

    def state_bytes(self):
        return None

    def index_bytes(self):
        return None


def digest_check_seconds(cache, clock="cpu"):
    """What span digest checks cost the daemons that logged in cache: the
    sum of the `span digest checks:` lines each writes when it ends, in CPU
    seconds of the hashing threads (clock="cpu", the cost) or in wall
    seconds around the hashing (clock="wall", which also counts a thread's
    waits for a core)."""
    total = 0.0
    for log in glob.glob(os.path.join(cache, "logs", "mount-*.log*")):
        with open(log, errors="replace") as f:
            for line in f:
                m = re.search(rf"span digest checks: .* {clock}_seconds=([0-9.eE+-]+)", line)
                if m:
                    total += float(m.group(1))
    return total


class Ocimount(System):
    def __init__(self, bench, fmt, variant=None, flags=()):
        # variant: a cache setting measured as its own column ("cap 10%",
        # "index-only"), with the global flags that make it.
        suffix = f"-{variant.replace(' ', '').replace('%', 'pct')}" if variant else ""
        self.key = f"ocimount-{fmt}{suffix}"
        self.label = f"ocimount ({fmt}, {variant})" if variant else f"ocimount ({fmt})"
        self.fmt, self.flags = fmt, list(flags)
        super().__init__(bench)
        self.layout = bench.layouts[fmt]
        self.cache = os.path.join(self.dir, "cache")

    def cli(self, *args, **kw):
        return run([self.b.bin, "--cache", self.cache, *self.flags, *args], **kw)

    def mount(self):
        t0 = time.perf_counter()
        self.cli("mount", self.layout, self.mnt)
        t = time.perf_counter() - t0
        if not mounted(self.mnt):
            raise RuntimeError(f"ocimount mount returned but {self.mnt} is not a mountpoint")
        return t

    def cold(self):
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)
        drop_caches()
        return self.mount()

    def fresh_data(self):
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)
        self.mount()

    def drop_data(self):
        out = self.cli("cache", "prune", stdout=subprocess.PIPE).stdout.decode()
        if "in use" in out:
            raise RuntimeError(f"ocimount cache prune kept decoded data: {out.strip()}")

    def pid(self):
        p = self.cli("mounts", stdout=subprocess.PIPE)
        for line in p.stdout.decode().splitlines():
            f = line.split("\t")
            if f[0] == self.mnt and len(f) > 2 and f[2].startswith("pid "):
                return int(f[2][4:])
        return None

    def stop(self):
        if not mounted(self.mnt):
            return
        pid = self.pid()
        try:
            self.cli("umount", self.mnt, timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired):
            run(["umount", "-l", self.mnt], ok=(0, 1, 32))
        if pid:
            wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, f"ocimount daemon {pid} to exit")

    def state_bytes(self):
        return disk_usage(self.cache)

    def index_bytes(self):
        total = 0
        for d, _dirs, files in os.walk(os.path.join(self.cache, "layers")):
            if "index" in files:
                total += os.path.getsize(os.path.join(d, "index"))
        return total


class Ratarmount(System):
    key, label = "ratarmount", "ratarmount"

    def __init__(self, bench):
        super().__init__(bench)
        self.index = os.path.join(self.dir, "index")
        self.blobs = [b for b, _c, _s in image_layers(bench.layouts["gzip"])]

    def mount(self):
        os.makedirs(self.index, exist_ok=True)
        t0 = time.perf_counter()
        run([self.b.ratarmount, "--index-folders", self.index, *self.blobs, self.mnt])
        wait_until(lambda: mounted(self.mnt), 120, "ratarmount's mount")
        return time.perf_counter() - t0

    def cold(self):
        self.stop()
        shutil.rmtree(self.index, ignore_errors=True)
        drop_caches()
        return self.mount()

    def pid(self):
        pids = [p for p in pids_with(self.mnt) if p != os.getpid()]
        return pids[0] if pids else None

    def stop(self):
        if not mounted(self.mnt):
            return
        pid = self.pid()
        try:
            run(["fusermount3", "-u", self.mnt], timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired):
            run(["umount", "-l", self.mnt], ok=(0, 1, 32))
        if pid:
            wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, "ratarmount to exit")

    def state_bytes(self):
        return disk_usage(self.index)

    def index_bytes(self):
        return disk_usage(self.index)


WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def to_overlay_whiteouts(top):
    """OCI whiteout files -> overlayfs whiteouts (0/0 char devices, opaque xattr)."""
    for d, dirs, files in os.walk(top):
        for name in files + dirs:
            if not name.startswith(WHITEOUT):
                continue
            p = os.path.join(d, name)
            if name == OPAQUE:
                os.unlink(p)
                os.setxattr(d, "trusted.overlay.opaque", b"y")
            else:
                os.unlink(p)
                os.mknod(os.path.join(d, name[len(WHITEOUT):]), 0o600 | 0o020000, os.makedev(0, 0))


class Overlay(System):
    def __init__(self, bench, kind):
        self.kind = kind
        self.key = self.label = kind
        super().__init__(bench)
        self.layers_dir = os.path.join(self.dir, "layers")
        self.layers = image_layers(bench.layouts["gzip"])

    def lowerdirs(self):
        return ":".join(os.path.join(self.layers_dir, str(i)) for i in reversed(range(len(self.layers))))

    def mount(self):
        t0 = time.perf_counter()
        if self.kind == "overlayfs":
            run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=" + self.lowerdirs(), self.mnt])
        else:
            run(["fuse-overlayfs", "-o", "lowerdir=" + self.lowerdirs(), self.mnt])
            wait_until(lambda: mounted(self.mnt), 120, "fuse-overlayfs's mount")
        return time.perf_counter() - t0

    def cold(self):
        """Extract every layer (tar, zcat), convert whiteouts, mount."""
        self.stop()
        shutil.rmtree(self.layers_dir, ignore_errors=True)
        drop_caches()
        t0 = time.perf_counter()
        for i, (blob, comp, _size) in enumerate(self.layers):
            d = os.path.join(self.layers_dir, str(i))
            os.makedirs(d)
            run(["tar", "-xpf", blob, "-C", d, "--numeric-owner", "--xattrs", "--xattrs-include=*",
                 "--use-compress-program=" + DECOMPRESS[comp][0]])
            to_overlay_whiteouts(d)
        return time.perf_counter() - t0 + self.mount()

    def pid(self):
        if self.kind == "overlayfs":
            return None
        pids = pids_with(self.mnt)
        return pids[0] if pids else None

    def stop(self):
        if not mounted(self.mnt):
            return
        pid = self.pid()
        cmd = ["umount", self.mnt] if self.kind == "overlayfs" else ["fusermount3", "-u", self.mnt]
        try:
            run(cmd, timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired):
            run(["umount", "-l", self.mnt], ok=(0, 1, 32))
        if pid:
            wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 60, "fuse-overlayfs to exit")

    def state_bytes(self):
        return disk_usage(self.layers_dir)


class Umoci(System):
    key, label = "umoci", "umoci unpack + extracted dir"
    has_warm = False

    def __init__(self, bench):
        super().__init__(bench)
        self.bundle = os.path.join(self.dir, "bundle")
        self.root = os.path.join(self.bundle, "rootfs")

    def cold(self):
        shutil.rmtree(self.bundle, ignore_errors=True)
        drop_caches()
        return timed(["umoci", "unpack", "--image", self.b.layouts["gzip"] + ":latest", self.bundle])

    def warm(self):
        return None

    def fresh_data(self):
        pass

    def state_bytes(self):
        return disk_usage(self.bundle)


# ------------------------------------------------------------------ metrics
# key, label, unit ("s" or "B"); the zcat columns fill only some rows.
METRICS = [  # key, short label, unit ("s" or "B"), what it is
    ("ready_cold", "cold start", "s",
     "from the blobs to a usable tree, empty cache, page cache dropped: `ocimount mount`, `umoci unpack`, "
     "ratarmount building its index, or `tar -x` of every layer + mount for the overlays; for zcat, "
     "decompressing every layer in turn (the limit)"),
    ("ready_warm", "warm mount", "s", "unmount and mount again with the index (or the extracted layers) kept"),
    ("ttfb", "first byte, cold", "s",
     "open + read of the first byte of {ttfb} right after the cold start, page cache dropped"),
    ("find_1", "find, 1st walk", "s", "`find` over the tree, dentry, inode and page caches dropped"),
    ("find_2", "find, 2nd walk", "s", "`find` over the tree again"),
    ("stat_storm", "stat storm", "s", "`lstat` of every path the walk found, one process, warm"),
    ("read_cold", "read all, cold", "s",
     "`tar -cf - . \\| cat >/dev/null` of the tree: empty data cache, page cache dropped; for zcat, "
     "decompressing every layer in turn (the limit)"),
    ("read_warm", "read all, warm", "s", "the same read again at once"),
    ("read_disk", "read all, remounted", "s",
     "the same read after a remount and a page cache drop (ocimount's data cache full on disk)"),
    ("rand_cold", "random 4K, cold", "s",
     "{nrand} `pread`s of 4 KiB at random offsets in {ttfb}, empty data cache, page cache dropped"),
    ("rand_warm", "random 4K, warm", "s", "the same {nrand} reads again"),
    ("rand_mount", "mount + random 4K, cold", "s",
     "from the mount command to the last of the {nrand} reads (the file's lookup and open "
     "included): indexes (or extracted layers) kept, "
     "ocimount's decoded data dropped, page cache dropped before the mount. ratarmount decodes "
     "its layers into memory while it mounts, so its `random 4K, cold` reads are served from RAM"),
    ("rss_hwm", "daemon peak RSS", "B", "VmHWM of the FUSE daemon after reading everything"),
    ("rss_anon", "daemon RssAnon", "B", "RssAnon of the FUSE daemon after reading everything"),
    ("rss_file", "daemon RssFile", "B",
     "RssFile of the FUSE daemon after reading everything (file-backed mappings: for ocimount, "
     "the cache's `data` files it serves from)"),
    ("state", "disk used", "B",
     "ocimount's cache after reading everything, the unpacked bundle, the extracted layers, "
     "ratarmount's index"),
    ("index", "index size", "B", "ocimount's layer indexes, ratarmount's SQLite indexes"),
    ("verify", "sha256 verify", "s",
     "`ocimount verify` (every blob digest and diff_id); for zcat, `sha256sum` of every blob and "
     "`zcat \\| sha256sum` of every layer"),
]

# Shown, but no ratio: a diagnostic, not a cost to compare.
NO_RATIO = {"rss_file"}


def metric_defs():
    return [{"key": k, "label": lab, "unit": u, "what": w, "ratio": k not in NO_RATIO}
            for k, lab, u, w in METRICS]


TARGETS = [  # (label, metric, system, peer or None, limit, kind)
    ("cold mount ≤ 1.0× zcat of every layer", "ready_cold", "ocimount-gzip", "zcat", 1.0, "ratio"),
    ("warm mount ≤ 15 ms", "ready_warm", "ocimount-gzip", None, 0.015, "abs"),
    ("find, first walk ≤ 5× extracted dir", "find_1", "ocimount-gzip", "umoci", 5.0, "ratio"),
    ("find, second walk ≤ 2× extracted dir", "find_2", "ocimount-gzip", "umoci", 2.0, "ratio"),
    ("read every file, cold ≤ 1.5× zcat", "read_cold", "ocimount-gzip", "zcat", 1.5, "ratio"),
    ("daemon RSS ≤ 64 MiB (peak, VmHWM)", "rss_hwm", "ocimount-gzip", None, 64 << 20, "abs"),
    ("daemon RSS ≤ 64 MiB (anonymous, RssAnon)", "rss_anon", "ocimount-gzip", None, 64 << 20, "abs"),
    ("index ≤ 2 % of the tar size", "index", "ocimount-gzip", "tar_bytes", 0.02, "ratio"),
    # issue 13
    ("cold start ≤ 0.4× zcat (issue 13)", "ready_cold", "ocimount-gzip", "zcat", 0.4, "ratio"),
    ("read everything, cold ≤ 0.8× zcat (issue 13)", "read_cold", "ocimount-gzip", "zcat", 0.8, "ratio"),
    ("read everything, warm ≤ 1.5× extracted dir (issue 13)", "read_warm", "ocimount-gzip", "umoci", 1.5,
     "ratio"),
    ("read everything, remounted ≤ 1.1× extracted dir (issue 13)", "read_disk", "ocimount-gzip", "umoci",
     1.1, "ratio"),
    ("find, second walk ≤ 1.2× extracted dir (issue 13)", "find_2", "ocimount-gzip", "umoci", 1.2, "ratio"),
    ("random 4K, cold ≤ 1.0× ratarmount (issue 13)", "rand_cold", "ocimount-gzip", "ratarmount", 1.0,
     "ratio"),
    ("mount + random 4K, cold ≤ 1.0× ratarmount (issue 13's, like for like)", "rand_mount", "ocimount-gzip", "ratarmount", 1.0,
     "ratio"),
]


class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = os.path.abspath(a.bin)
        self.work = os.path.abspath(a.work)
        self.ratarmount = os.path.abspath(a.ratarmount)
        self.layouts = {fmt: os.path.join(os.path.abspath(a.image), fmt) for fmt in ("gzip", "zstd")}
        with open(os.path.join(a.image, "image.json")) as f:
            self.image = json.load(f)
        os.makedirs(self.work, exist_ok=True)
        self.systems = []
        self.samples = {}    # system -> metric -> [values]
        self.notes = {}

    def log(self, msg):
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def add(self, system, metric, value):
        if value is not None:
            self.samples.setdefault(system, {}).setdefault(metric, []).append(value)

    def tar_read(self, root):
        return timed(["bash", "-c", 'tar -cf - -C "$1" . | cat >/dev/null; exit "${PIPESTATUS[0]}"',
                      "_", root], ok=(0, 1))

    def find(self, root, listfile):
        with open(listfile, "wb") as out:
            return timed(["find", root], stdout=out)

    def one_rep(self, s, rep):
        k = s.key
        ttfb_file = os.path.join(s.root, self.a.ttfb_file.lstrip("/"))
        listfile = os.path.join(self.work, f"{k}.paths")
        self.add(k, "ready_cold", s.cold())
        drop_caches()
        self.add(k, "ttfb", child("ttfb", ttfb_file))
        drop_caches()
        self.add(k, "find_1", self.find(s.root, listfile))
        self.add(k, "find_2", self.find(s.root, listfile))
        with open(listfile, "rb") as f:
            self.notes.setdefault("entries", {})[k] = f.read().count(b"\n")
        self.add(k, "stat_storm", child("statstorm", listfile))
        drop_caches()
        self.add(k, "read_cold", self.tar_read(s.root))
        self.add(k, "read_warm", self.tar_read(s.root))
        pid = s.pid()
        if pid:
            st = proc_status(pid)
            self.add(k, "rss_hwm", st.get("VmHWM"))
            self.add(k, "rss_anon", st.get("RssAnon"))
            self.add(k, "rss_file", st.get("RssFile"))
        self.add(k, "state", s.state_bytes())
        self.add(k, "index", s.index_bytes())
        if s.has_warm:
            self.add(k, "ready_warm", s.warm())
        drop_caches()
        self.add(k, "read_disk", self.tar_read(s.root))
        if isinstance(s, Ocimount):
            # The three reads of everything above, from the local layout:
            # what span digest checks cost them (issue 22: nothing).
            s.stop()
            self.add(k, "digest_checks", digest_check_seconds(s.cache))
        s.fresh_data()
        drop_caches()
        self.add(k, "rand_cold", child("randread", ttfb_file, self.a.nrand, rep))
        self.add(k, "rand_warm", child("randread", ttfb_file, self.a.nrand, rep))
        if s.has_warm:
            s.stop()
            s.drop_data()
            drop_caches()
            t = s.mount()
            self.add(k, "rand_mount", t + child("randread", ttfb_file, self.a.nrand, rep, 1))
        s.stop()

    def limits_rep(self):
        for fmt, key in (("gzip", "zcat"), ("zstd", "zstdcat")):
            layers = image_layers(self.layouts[fmt])
            script = " ; ".join(f"{DECOMPRESS[c][0]} '{b}'" for b, c, _s in layers)
            drop_caches()
            t = timed(["bash", "-c", f"{{ {script} ; }} | cat >/dev/null"])
            self.add(key, "ready_cold", t)
            self.add(key, "read_cold", t)
            drop_caches()
            sha = " ; ".join(f"sha256sum '{b}' ; {DECOMPRESS[c][0]} '{b}' | sha256sum" for b, c, _s in layers)
            self.add(key, "verify", timed(["bash", "-c", sha]))
            drop_caches()
            self.add(f"ocimount-{fmt}", "verify",
                     timed([self.bin, "--cache", os.path.join(self.work, "verify-cache"), "verify",
                            self.layouts[fmt]]))

    def measure(self):
        layers = image_layers(self.layouts["gzip"])
        p = subprocess.run(["bash", "-c", "{ " + " ; ".join(f"zcat '{b}'" for b, _c, _s in layers) + " ; } | wc -c"],
                           stdout=subprocess.PIPE, check=True, timeout=TIMEOUT)
        self.image["tar_bytes"] = int(p.stdout)
        # The cache bounds (docs/cache.md): decoded data capped at
        # 10 % of the tar, and none kept at all; "disk used" and "read all" show
        # what each costs.
        cap = str(self.image["tar_bytes"] // 10)
        self.systems = [Ocimount(self, "gzip"), Ocimount(self, "zstd"),
                        Ocimount(self, "gzip", "cap 10%", ["--cache-max", cap]),
                        Ocimount(self, "gzip", "index-only", ["--cache-mode", "index-only"]),
                        Umoci(self), Ratarmount(self),
                        Overlay(self, "fuse-overlayfs"), Overlay(self, "overlayfs")]
        self.image["layer_count"] = len(layers)
        self.notes["loadavg_start"] = loadavg()
        try:
            for rep in range(1, self.a.reps + 1):
                self.log(f"rep {rep}/{self.a.reps}: zcat, zstdcat, verify")
                self.limits_rep()
                for s in self.systems:
                    self.log(f"rep {rep}/{self.a.reps}: {s.label}")
                    self.one_rep(s, rep)
            registry.measure(self, sys.modules[__name__])
            if self.a.fleet_nodes > 0:
                fleet.measure(self, sys.modules[__name__])
            scale.measure(self, sys.modules[__name__])
        finally:
            self.notes["loadavg_end"] = loadavg()
            for s in reversed(self.systems):
                try:
                    s.stop()
                except Exception as e:  # keep unmounting the others
                    self.log(f"stopping {s.label}: {e}")

    def result(self):
        uname = os.uname()
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.lower().startswith(("model name", "cpu model", "hardware")):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
        rev = self.a.commit or subprocess.run(
            ["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always", "--dirty"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
        versions = {}
        for name, cmd in (("ocimount", [self.bin, "--version"]), ("umoci", ["umoci", "--version"]),
                          ("fuse-overlayfs", ["fuse-overlayfs", "--version"]),
                          ("ratarmount", [self.ratarmount, "--version"])):
            try:
                out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     timeout=60).stdout
                found = [x for x in out.splitlines() if "version" in x.lower() or name in x.lower()]
                versions[name] = (found or out.splitlines() or [""])[0].strip()
            except (OSError, subprocess.TimeoutExpired):
                versions[name] = "?"
        systems = [{"key": s.key, "label": s.label} for s in self.systems]
        systems[2:2] = [{"key": "zcat", "label": "zcat (limit)"}, {"key": "zstdcat", "label": "zstdcat (limit)"}]
        medians = {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in self.samples.items()}
        return {
            "machine": {"host": socket.gethostname(), "cores": os.cpu_count(), "arch": uname.machine,
                        "kernel": uname.release, "cpu": cpu, "memory_bytes": mem,
                        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
                        if hasattr(platform, "freedesktop_os_release") else ""},
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ocimount_commit": rev, "versions": versions, "reps": self.a.reps,
            "ttfb_file": self.a.ttfb_file, "nrand": self.a.nrand,
            "image": self.image, "entries": self.notes.get("entries", {}),
            "loadavg": {"start": self.notes.get("loadavg_start"), "end": self.notes.get("loadavg_end")},
            "systems": systems,
            "metrics": metric_defs(),
            "samples": self.samples, "medians": medians, "registry": self.notes.get("registry"),
            "scale": self.notes.get("scale"), "fleet": self.notes.get("fleet"),
        }


# ------------------------------------------------------------------ report
def ratio_ref(key):
    """Which ocimount a column's ratios are taken against."""
    return "ocimount-zstd" if key in ("zstdcat", "ocimount-zstd") else "ocimount-gzip"


def fmt_value(v, unit):
    if v is None:
        return "–"
    if unit == "B":
        return f"{v / (1 << 20):.1f} MiB"
    if v < 1:
        return f"{v * 1000:.3g} ms"
    return f"{v:.2f} s"


def ratios(res):
    """[(metric, peer key, ratio)] for every cell that has one: ocimount ÷ peer."""
    med = res["medians"]
    out = []
    for m in res["metrics"]:
        if not m.get("ratio", True):
            continue
        for s in res["systems"]:
            k = s["key"]
            if k.startswith("ocimount"):
                continue
            ref = med.get(ratio_ref(k), {}).get(m["key"])
            peer = med.get(k, {}).get(m["key"])
            if ref is not None and peer:
                out.append((m["key"], k, ref / peer))
    return out


def target_rows(res):
    med = res["medians"]
    rows = []
    for label, metric, system, peer, limit, kind in TARGETS:
        v = med.get(system, {}).get(metric)
        if v is None:
            continue
        if kind == "abs":
            shown, ok = fmt_value(v, "B" if metric.startswith("rss") else "s"), v <= limit
        elif peer == "tar_bytes":
            frac = v / res["image"]["tar_bytes"]
            shown, ok = f"{100 * frac:.2f} %", frac <= limit
        else:
            pv = med.get(peer, {}).get(metric)
            if not pv:
                continue
            shown, ok = f"{v / pv:.2f}×", v / pv <= limit
        rows.append((label, shown, "met" if ok else "**missed**"))
    return rows


def machine_line(res):
    m = res["machine"]
    return (f"{m['host']}: {m['cores']} cores, {m['arch']}, {m['cpu'] or 'unknown CPU'}, "
            f"{m['memory_bytes'] / (1 << 30):.0f} GiB, kernel {m['kernel']}, {m['os']}")


def markdown(res, svg_name):
    med = res["medians"]
    img = res["image"]
    cols = res["systems"]
    ents = res.get("entries", {})
    fill = {"ttfb": res["ttfb_file"], "nrand": res["nrand"]}
    lines = [
        f"# ocimount benchmark — {res['machine']['host']}, {res['date'][:10]}", "",
        f"Machine: {machine_line(res)}.  ",
        f"ocimount {res['ocimount_commit'] or '(no git)'}; {res['reps']} repetitions, medians; "
        f"load average {res.get('loadavg', {}).get('start')} at the start, "
        f"{res.get('loadavg', {}).get('end')} at the end.  ",
        f"Image: `{img['size']}`, {img['layer_count']} layers, {img['tar_bytes'] / 1e6:.0f} MB of tar, "
        f"{img['gzip_bytes'] / 1e6:.0f} MB gzip, {img['zstd_bytes'] / 1e6:.0f} MB zstd; "
        f"{ents.get('ocimount-gzip', '?')} paths in the merged tree "
        f"(ratarmount shows {ents.get('ratarmount', '?')}: it has no whiteouts, so deleted files "
        f"and `.wh.` markers stay visible).",
        "",
        "Each cell: the median, then in brackets ocimount ÷ peer (above 1× ocimount is slower or "
        "bigger). The ratios of the zstd column and of zstdcat are against ocimount (zstd); all others "
        "against ocimount (gzip). Peers read the gzip image.",
        "",
        "| measure | " + " | ".join(c["label"] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for m in res["metrics"]:
        cells = []
        for c in cols:
            v = med.get(c["key"], {}).get(m["key"])
            cell = fmt_value(v, m["unit"])
            ref = med.get(ratio_ref(c["key"]), {}).get(m["key"])
            if v and ref is not None and not c["key"].startswith("ocimount") and m.get("ratio", True):
                cell += f" ({ref / v:.2f}×)"
            if c["key"].startswith("ocimount") and m["key"] == "verify" and v:
                cell += f", {img['tar_bytes'] / v / 1e6:.0f} MB/s of tar"
            cells.append(cell)
        if any(x != "–" for x in cells):
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- **{m['label']}**: {m['what'].format(**fill).replace(chr(92), '')}."
                     for m in res["metrics"]]
    rs = sorted(ratios(res), key=lambda r: -r[2])
    if rs:
        label = {m["key"]: m["label"] for m in res["metrics"]}
        peer = {c["key"]: c["label"] for c in cols}
        w = rs[0]
        lines += ["", f"**Worst ratio against a peer: {w[2]:.2f}×** — {label[w[0]]}, against {peer[w[1]]}. "
                  "Next: " + ", ".join(f"{r[2]:.2f}× {label[r[0]]} against {peer[r[1]]}" for r in rs[1:4]) + "."]
        units = {m["key"]: m["unit"] for m in res["metrics"]}
        t = [r for r in rs if units[r[0]] == "s"]
        if t and t[0] != w:
            lines += ["", f"**Worst time ratio: {t[0][2]:.2f}×** — {label[t[0][0]]}, against {peer[t[0][1]]}."]
    lines += ["", "Design targets (ocimount, gzip image):", "", "| target | measured | |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in target_rows(res)]
    lines += registry.markdown(res, fmt_value)
    lines += fleet.markdown(res)
    lines += scale.markdown(res)
    lines += ["", f"![ocimount ÷ peer, per measure]({svg_name})", "",
              "Versions: " + "; ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".", ""]
    return "\n".join(lines)


def svg(res):
    """Horizontal bars, log scale: ocimount ÷ peer for every measure and peer."""
    rs = ratios(res)
    labels = {m["key"]: m["label"] for m in res["metrics"]}
    peers = [c["key"] for c in res["systems"] if not c["key"].startswith("ocimount")]
    names = {c["key"]: c["label"] for c in res["systems"]}
    colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
    metrics = [m["key"] for m in res["metrics"] if any(r[0] == m["key"] for r in rs)]
    bar, gap, left, width, top = 9, 10, 150, 600, 88
    import math
    lo, hi = -6, 6                                   # log2 range: 1/64× … 64×
    def x(r):
        v = min(max(math.log2(r), lo), hi)
        return left + (v - lo) / (hi - lo) * width
    rows = []
    y = top
    for m in metrics:
        cells = [(p, r) for mm, p, r in rs if mm == m]
        h = len(cells) * bar
        rows.append(f'<text x="{left - 6}" y="{y + h / 2 + 4:.1f}" text-anchor="end">{labels[m]}</text>')
        for p, r in cells:
            c = colors[peers.index(p) % len(colors)]
            x0, x1 = sorted((x(1), x(r)))
            rows.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar - 1}" '
                        f'fill="{c}"><title>{labels[m]} vs {names[p]}: {r:.2f}×</title></rect>')
            tx = x1 + 3 if r >= 1 else x0 - 3
            rows.append(f'<text x="{tx:.1f}" y="{y + bar - 1.5}" font-size="8" '
                        f'text-anchor="{"start" if r >= 1 else "end"}">{r:.2g}×</text>')
            y += bar
        y += gap
    height = y + 40
    grid = []
    for e in range(lo, hi + 1):
        gx = left + (e - lo) / (hi - lo) * width
        lab = f"{2 ** e:g}×" if e >= 0 else f"1/{2 ** -e}×"
        grid.append(f'<line x1="{gx:.1f}" y1="{top - 5}" x2="{gx:.1f}" y2="{y}" stroke="#ddd"/>'
                    f'<text x="{gx:.1f}" y="{y + 14}" text-anchor="middle" font-size="9">{lab}</text>')
    one = x(1)
    legend = []
    for i, p in enumerate(peers):
        lx = left + (i % 3) * 200
        ly = 50 + (i // 3) * 14
        legend.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="9" fill="{colors[i % len(colors)]}"/>'
                      f'<text x="{lx + 14}" y="{ly}">{names[p]}</text>')
    title = "ocimount ÷ peer, medians (log scale; right of 1×: ocimount slower or bigger)"
    sub = f"{machine_line(res)}; image {res['image']['size']}, {res['date'][:10]}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" '
            f'font-family="sans-serif" font-size="10">\n<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="8" y="16" font-size="12" font-weight="bold">{title}</text>\n'
            f'<text x="8" y="32" font-size="10">{sub}</text>\n'
            + "\n".join(legend + grid + rows)
            + f'\n<line x1="{one:.1f}" y1="{top - 5}" x2="{one:.1f}" y2="{y}" stroke="black"/>\n'
            f'<text x="{left + width / 2}" y="{y + 30}" text-anchor="middle">ocimount ÷ peer</text>\n</svg>\n')


def write_outputs(res, json_path):
    base = json_path[:-len(".json")]
    res["metrics"] = metric_defs()          # the current labels, for old results too
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    with open(base + ".svg", "w") as f:
        f.write(svg(res))
    with open(base + ".md", "w") as f:
        f.write(markdown(res, os.path.basename(base) + ".svg"))
    return base


# --------------------------------------------------------------------- main
def main():
    global TIMEOUT
    if len(sys.argv) > 1 and sys.argv[1] in ("ttfb", "randread", "statstorm"):
        {"ttfb": child_ttfb, "randread": child_randread, "statstorm": child_statstorm}[sys.argv[1]](*sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--image", required=True, help="dir with gzip/, zstd/ and image.json")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--ratarmount", required=True)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--nrand", type=int, default=1000)
    r.add_argument("--ttfb-file", default="/opt/bench/large.bin")
    r.add_argument("--files", type=int, default=1_000_000, help="files in the many-files image")
    r.add_argument("--images-cache", help="where the many-files image is kept")
    r.add_argument("--start-cmd", default=scale.DEFAULT_CMD, help="the container-start command (sh -c)")
    r.add_argument("--name", help="output base name (default HOST-DATE)")
    r.add_argument("--commit", help="what ocimount was built from (default: git describe of this checkout)")
    r.add_argument("--timeout", type=float, default=TIMEOUT, help="bound on any one step, seconds")
    r.add_argument("--fleet-nodes", type=int, default=fleet.NODES,
                   help="nodes behind the pull-through mirror (0: no fleet rows)")
    p = sub.add_parser("report")
    p.add_argument("json")
    a = ap.parse_args()
    if a.cmd == "report":
        with open(a.json) as f:
            print(write_outputs(json.load(f), a.json) + ".md")
        return
    TIMEOUT = a.timeout
    b = Bench(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks
    b.measure()
    res = b.result()
    os.makedirs(a.out, exist_ok=True)
    name = a.name or f"{socket.gethostname()}-{res['date'][:10]}"
    base = write_outputs(res, os.path.join(a.out, name + ".json"))
    print(base + ".md")


if __name__ == "__main__":
    main()
