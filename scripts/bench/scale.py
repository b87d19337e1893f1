#!/usr/bin/env python3
"""Issue 13's rows, beside run.py's table (stdlib only; needs root):

- many files: an image of one gzip layer with FILES files in directories of
  1,000 (built once, deterministic), mounted cold and warm, walked with
  `find` twice, the daemon's RSS after; umoci unpack and the extracted
  directory beside it (once: it takes minutes).
- container start: `ocimount run IMAGE -- CMD` with the indexes warm and the
  data cache empty (`cache prune`), page cache dropped, with --prefetch
  none, all and recorded (the record made by one untimed `run --record`).
- background fill: mount and read every file at once, --prefetch none
  against all, from the same state.

  scale.py --bin OCIMOUNT --image DIR --work DIR [--files N] [--reps N]
           [--cmd SHELL-COMMAND] [--json OUT]

run.py calls measure() and markdown() for its report; run alone, this
prints the section.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

DEFAULT_CMD = "dpkg -l >/dev/null; ls -l /usr/bin >/dev/null; cat /etc/os-release >/dev/null"
PER_DIR = 1000

GOALS = [  # label, system, metric, limit (seconds or bytes)
    ("warm mount, 1 M-file image ≤ 1 s", "manyfiles-ocimount", "warm", 1.0),
    ("daemon peak RSS at 1 M paths ≤ 64 MiB", "manyfiles-ocimount", "rss_hwm", 64 << 20),
]


# ------------------------------------------------------------- the image
def build_many_files(dest, files):
    """An OCI layout at dest with one gzip layer of `files` files (one in ten
    holding its own name, the rest empty) in directories of PER_DIR."""
    if os.path.exists(os.path.join(dest, "index.json")):
        return
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    tar_path = os.path.join(tmp, "layer.tar")
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in range((files + PER_DIR - 1) // PER_DIR):
            info = tarfile.TarInfo(f"d{d:04}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
            for f in range(min(PER_DIR, files - d * PER_DIR)):
                info = tarfile.TarInfo(f"d{d:04}/f{f:04}")
                data = info.name.encode() if f % 10 == 0 else b""
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(data))

    def sha(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    diff_id = sha(tar_path)
    subprocess.run(["gzip", "-1", "-n", tar_path], check=True)
    gz = tar_path + ".gz"
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": "sha256:" + sha(gz), "size": os.path.getsize(gz)}
    os.rename(gz, os.path.join(blobs, layer["digest"][7:]))

    def put(doc):
        body = json.dumps(doc, separators=(",", ":")).encode()
        digest = hashlib.sha256(body).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(body)
        return {"digest": "sha256:" + digest, "size": len(body)}

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = put({"architecture": arch, "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}})
    manifest = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                    "layers": [layer]})
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    os.rename(tmp, dest)


# ------------------------------------------------------------- measuring
class Scale:
    def __init__(self, h, bin_path, gzip_layout, work, files, reps, cmd, log, images=None):
        self.h, self.bin, self.layout, self.work = h, bin_path, gzip_layout, work
        self.files, self.reps, self.cmd, self.log = files, reps, cmd, log
        self.samples, self.notes = {}, {"errors": {}, "files": files, "cmd": cmd}
        images = images or os.path.join(work, "images")
        self.many = os.path.join(images, f"many-{files}")
        os.makedirs(images, exist_ok=True)
        self.env = dict(os.environ, TMPDIR=os.path.join(work, "tmp"))
        os.makedirs(self.env["TMPDIR"], exist_ok=True)

    def add(self, system, metric, value):
        if value is not None:
            self.samples.setdefault(system, {}).setdefault(metric, []).append(value)

    def cell(self, system, metric, fn):
        try:
            self.add(system, metric, fn())
        except Exception as e:       # one failed cell, not a lost run
            self.log(f"scale: {system} {metric}: {e}")
            self.notes["errors"][f"{system} {metric}"] = str(e)[-1000:]

    def node(self, name, image):
        o = self.h.Ocimount.__new__(self.h.Ocimount)
        o.b, o.key, o.label, o.fmt, o.flags = self, name, name, "gzip", []
        o.dir = os.path.join(self.work, name)
        o.mnt = o.root = os.path.join(o.dir, "mnt")
        o.cache = os.path.join(o.dir, "cache")
        o.layout = image
        os.makedirs(o.mnt, exist_ok=True)
        return o

    def find(self, root):
        return self.h.timed(["find", root])

    # --- many files
    def many_files(self):
        t0 = time.perf_counter()
        build_many_files(self.many, self.files)
        self.notes["many_build_seconds"] = time.perf_counter() - t0
        o = self.node("manyfiles-ocimount", self.many)
        for rep in range(self.reps):
            self.log(f"scale: many files ({self.files}), rep {rep + 1}/{self.reps}")
            self.cell(o.key, "cold", o.cold)
            self.cell(o.key, "warm", o.warm)
            self.h.drop_caches()
            self.cell(o.key, "find_1", lambda: self.find(o.mnt))
            self.cell(o.key, "find_2", lambda: self.find(o.mnt))
            pid = o.pid()
            if pid:
                st = self.h.proc_status(pid)
                self.add(o.key, "rss_hwm", st.get("VmHWM"))
                self.add(o.key, "rss_anon", st.get("RssAnon"))
            trees = os.path.join(o.cache, "trees")
            self.add(o.key, "tree_bytes", self.h.disk_usage(trees))
            self.add(o.key, "index_bytes", o.index_bytes())
            o.stop()
        shutil.rmtree(o.cache, ignore_errors=True)
        # umoci takes minutes to unpack a million files: once is enough.
        bundle = os.path.join(self.work, "manyfiles-umoci")
        for rep in range(1):
            shutil.rmtree(bundle, ignore_errors=True)
            self.h.drop_caches()
            self.cell("manyfiles-umoci", "cold", lambda: self.h.timed(
                ["umoci", "unpack", "--image", self.many + ":latest", bundle]))
            root = os.path.join(bundle, "rootfs")
            self.h.drop_caches()
            self.cell("manyfiles-umoci", "find_1", lambda: self.find(root))
            self.cell("manyfiles-umoci", "find_2", lambda: self.find(root))
        shutil.rmtree(bundle, ignore_errors=True)

    # --- container start and background fill
    def run_cmd(self, o, *flags):
        t0 = time.perf_counter()
        o.cli("run", *flags, o.layout, "--", "sh", "-c", self.cmd, env=self.env)
        return time.perf_counter() - t0

    def emptied(self, o):
        """Indexes and tree kept, decoded data dropped, page cache dropped."""
        o.stop()
        o.cli("cache", "prune")
        self.h.drop_caches()

    def container_start(self):
        o = self.node("start", self.layout)
        shutil.rmtree(o.cache, ignore_errors=True)
        o.cli("ls", o.layout, "/")                  # indexes and tree, untimed
        self.run_cmd(o, "--record")                 # the record, untimed
        for rep in range(self.reps):
            self.log(f"scale: container start and fill, rep {rep + 1}/{self.reps}")
            for policy in ("none", "all", "recorded"):
                self.emptied(o)
                self.cell(f"start-{policy}", "run", lambda: self.run_cmd(o, "--prefetch", policy))
            for policy in ("none", "all"):
                self.emptied(o)

                def fill():
                    t0 = time.perf_counter()
                    o.cli("mount", "--prefetch", policy, o.layout, o.mnt)
                    first = os.path.join(o.mnt, "etc/os-release")
                    with open(first, "rb") as f:
                        f.read()
                    self.add(f"fill-{policy}", "first_read", time.perf_counter() - t0)
                    self.h.run(["bash", "-c", 'tar -cf - -C "$1" . | cat >/dev/null', "_", o.mnt],
                               ok=(0, 1))
                    return time.perf_counter() - t0
                self.cell(f"fill-{policy}", "read_all", fill)
                o.stop()
        shutil.rmtree(o.cache, ignore_errors=True)

    def measure(self):
        for part in (self.many_files, self.container_start):
            try:
                part()
            except Exception as e:
                self.log(f"scale: {e}")
                self.notes["errors"][part.__name__] = str(e)[-2000:]
        return {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in self.samples.items()}


def measure(bench, h):
    """The rows for run.py: bench.a.files files, bench.a.reps repetitions."""
    s = Scale(h, bench.bin, bench.layouts["gzip"], os.path.join(bench.work, "scale"),
              bench.a.files, bench.a.reps, bench.a.start_cmd, bench.log, bench.a.images_cache)
    med = s.measure()
    bench.notes["scale"] = {"notes": s.notes, "medians": med}


# ------------------------------------------------------------- report
def secs(v):
    if v is None:
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def mib(v):
    return "–" if v is None else f"{v / (1 << 20):.1f} MiB"


def markdown(res):
    scale = res.get("scale") if "medians" in res.get("scale", {}) else None
    if not scale:
        return []
    med, notes = scale["medians"], scale["notes"]
    o, u = med.get("manyfiles-ocimount", {}), med.get("manyfiles-umoci", {})
    ratio = lambda a, b: f" ({a / b:.2f}×)" if a and b else ""
    lines = [
        "", f"## Many files: {notes['files']:,} files in directories of {PER_DIR}, one gzip layer", "",
        "| measure | ocimount | umoci unpack + extracted dir |", "|---|---:|---:|",
        f"| cold start (index, merge, store the tree; or unpack) | {secs(o.get('cold'))} | "
        f"{secs(u.get('cold'))}{ratio(o.get('cold'), u.get('cold'))} |",
        f"| warm mount | {secs(o.get('warm'))} | – |",
        f"| find, 1st walk | {secs(o.get('find_1'))} | {secs(u.get('find_1'))}"
        f"{ratio(o.get('find_1'), u.get('find_1'))} |",
        f"| find, 2nd walk | {secs(o.get('find_2'))} | {secs(u.get('find_2'))}"
        f"{ratio(o.get('find_2'), u.get('find_2'))} |",
        f"| daemon peak RSS (VmHWM) after the walks | {mib(o.get('rss_hwm'))} | – |",
        f"| daemon RssAnon | {mib(o.get('rss_anon'))} | – |",
        f"| stored tree / layer index on disk | {mib(o.get('tree_bytes'))} / {mib(o.get('index_bytes'))} | – |",
        "", "Ratios in brackets: ocimount ÷ umoci.", "",
        "| goal | measured | |", "|---|---:|---|",
    ]
    for label, system, metric, limit in GOALS:
        v = med.get(system, {}).get(metric)
        shown = mib(v) if metric.startswith("rss") else secs(v)
        lines.append(f"| {label} | {shown} | {'–' if v is None else ('met' if v <= limit else '**missed**')} |")
    none = med.get("start-none", {}).get("run")
    lines += [
        "", "## Container start and background fill", "",
        f"`ocimount run IMAGE -- sh -c '{notes['cmd']}'` on the gzip image, indexes and tree warm, "
        "decoded data dropped (`cache prune`) and page cache dropped before each; `recorded` uses the "
        "record of one earlier `run --record`. Fill: `mount --prefetch P`, then the first read of "
        "`/etc/os-release`, then every file read (`tar -c | cat`), timed from the mount.", "",
        "| policy | `run` | ÷ none | mount + first read | mount + read everything |",
        "|---|---:|---:|---:|---:|",
    ]
    for policy in ("none", "all", "recorded"):
        r = med.get(f"start-{policy}", {}).get("run")
        f = med.get(f"fill-{policy}", {})
        lines.append(f"| {policy} | {secs(r)} | {f'{r / none:.2f}×' if r and none else '–'} | "
                     f"{secs(f.get('first_read'))} | {secs(f.get('read_all'))} |")
    for k, e in notes.get("errors", {}).items():
        lines += ["", f"Failed, {k}: `{(e.strip().splitlines() or ['?'])[0]}`"]
    return lines + [""]


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run as h
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--image", required=True, help="the bench image dir (with gzip/)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cmd", default=DEFAULT_CMD)
    ap.add_argument("--images-cache", help="where the many-files image is kept (default WORK/images)")
    ap.add_argument("--json")
    a = ap.parse_args()
    log = lambda m: print(f"[scale {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)
    s = Scale(h, os.path.abspath(a.bin), os.path.join(os.path.abspath(a.image), "gzip"),
              os.path.abspath(a.work), a.files, a.reps, a.cmd, log, a.images_cache)
    med = s.measure()
    res = {"scale": {"notes": s.notes, "medians": med}}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print("\n".join(markdown(res)))


if __name__ == "__main__":
    main()
