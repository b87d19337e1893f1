"""The REGISTRY rows of the benchmark (called by run.py; stdlib only).

The gzip image is served by Debian's `docker-registry` (distribution 2.8) on
127.0.0.1, plain HTTP, with its own config, storage and log under
WORK/registry, and reached three ways by a node that has never seen it (an
empty ocimount cache, the page cache dropped):

  1. `skopeo copy docker://… oci:DIR`, then ocimount on that layout;
  2. ocimount on docker://… with `--no-remote-index` (a full pass over the
     layers, as when nobody has published indexes);
  3. ocimount on docker://… with the index artifact that one
     `ocimount index push` (own cache, untimed) published beforehand;
  4. and 5. ocimount on the same image made eStargz and zstd:chunked by
     their real producers (scripts/make-lazy-images.sh), read through their
     tables of contents with `--no-remote-index` (issue 23).

Way 2's first file and `skopeo copy` alone are also timed through links
paced to 1 Gbit/s and 100 Mbit/s (scripts/bench/link.py: a network
namespace joined by a veth pair whose egress tc's tbf paces, with a second
registry inside on the same storage), where the full pass is held to the
copy.

Each way is timed to the first file (`ocimount mount`, then `cat` of the
file through the mount; the unmount that follows is not timed) and to
`ocimount run IMAGE -- true`; ways 2 and 3 also read everything, and
`skopeo copy` alone is timed for the goal it is held to. Bytes are the
response sizes of the `GET /v2/…/blobs/…` lines the registry's access log
gained during the step (its combined-log-format lines give the bytes
written: a Range answer logs its part, a stream cut short what went out). The registry is stopped
on the way out, whatever happens: by `finally` (run.py turns SIGTERM into
SystemExit), and by PR_SET_PDEATHSIG should the runner be killed outright.

Results go where run.py keeps its own: samples under the systems below
(medians by run.py), the rest under the result's "registry" key;
`markdown()` renders the section from the result alone, so `run.py report`
re-renders it too.
"""
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.request

import link  # the paced links: scripts/bench/link.py

REPO = "bench/image"
TAG = "latest"
# The first file: the first of these that `ocimount cat` finds in the image
# (the tiny image has /etc but not /usr/lib, so its os-release dangles).
FIRST_FILES = ("/etc/os-release", "/etc/debian_version")
READY_LIMIT = 60.0      # seconds for the registry to answer
SETTLE = 0.3            # the access log is complete once it is quiet this long …
SETTLE_LIMIT = 10.0     # … or after this
ARTIFACT_TYPE = "application/vnd.ocimount.index.v1"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"

# Sample keys: system -> metric, in run.py's samples/medians. A metric named
# M has its blob bytes under M_bytes.
WAYS = [  # key, label
    ("registry-skopeo", "1. `skopeo copy` to a layout, then ocimount on it"),
    ("registry-noindex", "2. ocimount on the registry, no index artifact (`--no-remote-index`)"),
    ("registry-index", "3. ocimount on the registry, with the index artifact"),
    ("registry-estargz", "4. ocimount on the eStargz image, through its TOCs (no artifact)"),
    ("registry-zstdchunked", "5. ocimount on the zstd:chunked image, through its TOCs (no artifact)"),
    ("skopeo-copy", "`skopeo copy docker://… oci:DIR` alone"),
    ("registry-noindex@1g", "2, through a 1 Gbit/s link"),
    ("skopeo-copy@1g", "`skopeo copy` alone, through a 1 Gbit/s link"),
    ("registry-noindex@100m", "2, through a 100 Mbit/s link"),
    ("skopeo-copy@100m", "`skopeo copy` alone, through a 100 Mbit/s link"),
]
# Slower links than loopback (scripts/bench/link.py paces what the
# registry sends): way 2's first file against `skopeo copy` on each.
LINKS = [("1g", 1e9), ("100m", 1e8)]
# The lazily pullable copies of the gzip image (issue 23), made once by
# scripts/make-lazy-images.sh with their real producers: system -> the
# layout under its output directory and the repository it is pushed to.
LAZY = {"registry-estargz": ("estargz", "bench/estargz"),
        "registry-zstdchunked": ("zstd-chunked", "bench/zstd-chunked")}
ROWS = [  # system, metric, what
    ("registry-skopeo", "first_file", "first file: `skopeo copy` + `ocimount mount` of the layout + `cat {file}`"),
    ("registry-skopeo", "run", "`skopeo copy` + `ocimount run LAYOUT -- true`"),
    ("registry-noindex", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("registry-noindex", "run", "`ocimount run docker://… -- true`"),
    ("registry-noindex", "read_all", "read everything: `ocimount mount docker://…` + `tar -cf - . \\| cat >/dev/null`"),
    ("registry-index", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("registry-index", "run", "`ocimount run docker://… -- true`"),
    ("registry-index", "read_all", "read everything: `ocimount mount docker://…` + `tar -cf - . \\| cat >/dev/null`"),
    ("registry-estargz", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("registry-estargz", "run", "`ocimount run docker://… -- true`"),
    ("registry-estargz", "read_all", "read everything: `ocimount mount docker://…` + `tar -cf - . \\| cat >/dev/null`"),
    ("registry-zstdchunked", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("registry-zstdchunked", "run", "`ocimount run docker://… -- true`"),
    ("registry-zstdchunked", "read_all", "read everything: `ocimount mount docker://…` + `tar -cf - . \\| cat >/dev/null`"),
    ("skopeo-copy", "copy", "the copy alone, for comparison"),
    ("registry-noindex@1g", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("skopeo-copy@1g", "copy", "the copy alone"),
    ("registry-noindex@100m", "first_file", "first file: `ocimount mount docker://…` + `cat {file}`"),
    ("skopeo-copy@100m", "copy", "the copy alone"),
]
GOALS = [  # label, system, metric, kind, limit  (issues 10 and 22)
    ("with the artifact, the first file in ≤ 0.5 s", "registry-index", "first_file", "abs", 0.5),
    ("with the artifact, the first file with ≤ 5 % of the compressed bytes", "registry-index",
     "first_file_bytes", "of_layers", 0.05),
    ("with no artifact, the first file in ≤ 1.0× the time of `skopeo copy` alone", "registry-noindex",
     "first_file", "of_copy", 1.0),
    # issue 23: no TOC and no artifact, on real links
    ("the same at 1 Gbit/s", "registry-noindex@1g", "first_file", "of_copy", 1.0),
    ("the same at 100 Mbit/s", "registry-noindex@100m", "first_file", "of_copy", 1.0),
    # issue 22: every span from the registry is hashed before it is served
    ("with the artifact, span digest checks ≤ 5 % of reading everything", "registry-index",
     "read_all_checks", "of_read_all", 0.05),
    ("from a layout (read everything, cold, warm and from disk), gzip: span digest checks ≤ 1 %",
     "ocimount-gzip", "digest_checks", "of_local_reads", 0.01),
    ("the same, zstd", "ocimount-zstd", "digest_checks", "of_local_reads", 0.01),
    # issue 23: through a TOC, with no artifact
    ("eStargz: the first file in ≤ 0.5 s", "registry-estargz", "first_file", "abs", 0.5),
    ("eStargz: the first file with ≤ 5 % of its compressed bytes", "registry-estargz",
     "first_file_bytes", "of_layers", 0.05),
    ("eStargz: reading everything in ≤ 1.5× way 2's (the full pass)", "registry-estargz",
     "read_all", "of_full_pass", 1.5),
    ("zstd:chunked: the first file in ≤ 0.5 s", "registry-zstdchunked", "first_file", "abs", 0.5),
    ("zstd:chunked: the first file with ≤ 5 % of its compressed bytes", "registry-zstdchunked",
     "first_file_bytes", "of_layers", 0.05),
    ("zstd:chunked: reading everything in ≤ 1.5× way 2's (the full pass)", "registry-zstdchunked",
     "read_all", "of_full_pass", 1.5),
    # DESIGN.md: digest checks of remote bytes ≤ 5 % of reading everything,
    # for every way. A TOC's chunkDigest is taken over decoded bytes (about
    # three times the compressed ones), so these checks cannot be moved to
    # the compressed range as way 3's were; shown so the cost stays visible.
    ("eStargz: chunk digest checks ≤ 5 % of reading everything", "registry-estargz",
     "read_all_checks", "of_read_all", 0.05),
    ("zstd:chunked: chunk digest checks ≤ 5 % of reading everything", "registry-zstdchunked",
     "read_all_checks", "of_read_all", 0.05),
]


def layer_bytes(notes, system):
    """The compressed layers a way reads: its own image's, for the lazy ones."""
    return notes.get(f"{system}_layer_bytes") or notes.get("layer_bytes")


def _die_with_parent():
    """In the child: SIGTERM when the runner dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`docker-registry serve` on 127.0.0.1:PORT, config, storage and log in DIR;
    with remote (`http://127.0.0.1:PORT`), a pull-through cache of that registry
    (distribution's `proxy.remoteurl`; fleet.py). link.py runs one in a network
    namespace of its own (netns, on addr) on another's storage."""

    def __init__(self, dir, remote=None, storage=None, netns=None, addr="127.0.0.1"):
        self.dir = dir
        self.remote = remote
        self.storage = storage or os.path.join(dir, "storage")
        self.netns = netns
        self.addr = addr
        self.log_path = os.path.join(dir, "registry.log")
        self.proc = None
        self.port = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.storage, exist_ok=True)
        for _ in range(5):       # the port may be taken between free_port() and the bind: retry
            self.port = free_port()
            config = os.path.join(self.dir, "config.yml")
            with open(config, "w") as f:
                f.write(f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {self.storage}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {self.addr}:{self.port}
  secret: ocimount-bench
""" + (f"proxy:\n  remoteurl: {self.remote}\n" if self.remote else ""))
            start = self.log_size()
            with open(self.log_path, "ab") as log:
                netns = ["ip", "netns", "exec", self.netns] if self.netns else []
                self.proc = subprocess.Popen([*netns, "docker-registry", "serve", config], cwd=self.dir,
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             preexec_fn=_die_with_parent)
            end = time.monotonic() + READY_LIMIT
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    break
                if self.answers():
                    return
                time.sleep(0.05)
            tail = self.log_since(start)[-2000:]
            self.stop()
            if "address already in use" not in tail:
                raise RuntimeError(f"docker-registry did not answer on {self.addr}:{self.port} "
                                   f"within {READY_LIMIT:.0f} s:\n{tail}")
        raise RuntimeError("docker-registry: no free port after 5 attempts")

    def answers(self):
        try:
            with urllib.request.urlopen(f"http://{self.addr}:{self.port}/v2/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def version(self):
        p = subprocess.run(["docker-registry", "--version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        return p.stdout.strip()

    # --- the access log: bytes between two points
    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def settle(self):
        """Wait until the log is quiet: a request is logged when its answer ends,
        which for a stream the client dropped is a moment after it closed."""
        end = time.monotonic() + SETTLE_LIMIT
        size, since = self.log_size(), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            now = self.log_size()
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= SETTLE:
                return

    BLOB_GET = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "GET /v2/\S+/blobs/sha256:[0-9a-f]{64} HTTP/[0-9.]+" '
                          r'\d{3} (\d+|-) ')

    def blob_bytes(self, offset):
        """Bytes answered to `GET …/blobs/…` in the log lines after offset."""
        self.settle()
        total = 0
        for line in self.log_since(offset).splitlines():
            m = self.BLOB_GET.match(line)
            if m and m.group(1) != "-":
                total += int(m.group(1))
        return total

    def layer_link_path(self, repo, digest):
        """The link that makes blob digest part of repo: a pull-through cache
        answers from its own storage once this exists (it writes the data
        first and links it a moment later)."""
        algo, hex = digest.split(":", 1)
        return os.path.join(self.dir, "storage", "docker", "registry", "v2", "repositories", repo,
                            "_layers", algo, hex, "link")

    def blob_bytes_by_digest(self, offset):
        """{digest: bytes answered to `GET …/blobs/DIGEST`} in the log lines after offset."""
        self.settle()
        per = {}
        for line in self.log_since(offset).splitlines():
            m = self.BLOB_GET.match(line)
            if m and m.group(1) != "-":
                digest = line.split('"')[1].split(" ")[1].rsplit("/", 1)[1]
                per[digest] = per.get(digest, 0) + int(m.group(1))
        return per

    def get_json(self, path, accept):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body), len(body)


class Section:
    """The registry, the nodes that read it, and what they measured."""

    def __init__(self, bench, h):
        self.b, self.h = bench, h         # the Bench, and run.py's module (its helpers)
        self.dir = os.path.join(bench.work, "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.reg = Registry(self.dir)
        self.notes = {"errors": {}}
        self.layout = bench.layouts["gzip"]
        self.layers = h.image_layers(self.layout)
        # `ocimount run` makes its bundle under TMPDIR: the work dir, which
        # bench.sh sweeps of mounts whatever happens.
        self.env = dict(os.environ, TMPDIR=os.path.join(self.dir, "tmp"))
        os.makedirs(self.env["TMPDIR"], exist_ok=True)

    @property
    def image(self):
        return f"docker://127.0.0.1:{self.reg.port}/{REPO}:{TAG}"

    def node(self, name, image, flags=()):
        """An ocimount with a cache of its own, on image (run.py's Ocimount, pointed elsewhere)."""
        o = self.h.Ocimount(self.b, "gzip", f"registry {name}", ["--tls-verify=false", *flags])
        o.layout = image
        return o

    # --- once
    def setup(self):
        h, n = self.h, self.notes
        self.reg.start()
        n["versions"] = {"docker-registry": self.reg.version(),
                         "skopeo": h.run(["skopeo", "--version"], stdout=subprocess.PIPE)
                         .stdout.decode().strip()}
        self.b.log(f"registry: 127.0.0.1:{self.reg.port}, skopeo copy of the gzip image")
        h.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
               f"oci:{self.layout}:{TAG}", self.image])
        n["layer_bytes"] = sum(size for _b, _c, size in self.layers)
        self.push_lazy_images()
        scratch = self.node("precheck", self.layout)
        n["first_file"] = next((p for p in FIRST_FILES if scratch.cli(
            "cat", self.layout, p, ok=(0, 1, 2)).returncode == 0), None)
        if n["first_file"] is None:
            raise RuntimeError(f"none of {', '.join(FIRST_FILES)} is in the image")
        # `run -- true` needs /usr/bin/true and the libc it links: the tiny
        # image has neither. Tried on the layout, untimed.
        p = scratch.cli("run", self.layout, "--", "true", ok=range(256), env=self.env)
        why = (p.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        n["run"] = "measured" if p.returncode == 0 else (
            f"not measured: `ocimount run` of the layout fails (exit {p.returncode}: {why})")
        shutil.rmtree(scratch.dir, ignore_errors=True)
        # The artifact, published once by a node of its own.
        pusher = self.node("push", self.image)
        t0 = time.perf_counter()
        p = pusher.cli("index", "push", self.image, stdout=subprocess.PIPE)
        n["index_push_seconds"] = time.perf_counter() - t0
        n["index_push_output"] = p.stdout.decode().strip()
        shutil.rmtree(pusher.dir, ignore_errors=True)
        n["artifact_bytes"] = self.artifact_bytes()

    def push_lazy_images(self):
        """Make the eStargz and zstd:chunked copies of the gzip image once
        (kept beside the bench image), and push them as they are."""
        h, n = self.h, self.notes
        out = os.path.abspath(self.b.a.image) + "-lazy"
        if not all(os.path.exists(os.path.join(out, d, "index.json")) for d, _r in LAZY.values()):
            self.b.log(f"registry: making the eStargz and zstd:chunked images in {out}")
            shutil.rmtree(out, ignore_errors=True)
            h.run([os.path.join(os.path.dirname(__file__), "..", "make-lazy-images.sh"),
                   f"{self.layout}:{TAG}", out],
                  env=dict(os.environ, VERIFY="0", ESTARGZ_PRIORITIZE=""))
        self.lazy_layouts = {}
        for system, (d, repo) in LAZY.items():
            layout = os.path.join(out, d)
            self.lazy_layouts[system] = layout
            h.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
                   f"oci:{layout}:{TAG}", f"docker://127.0.0.1:{self.reg.port}/{repo}:{TAG}"])
            n[f"{system}_layer_bytes"] = sum(size for _b, _c, size in h.image_layers(layout))

    def lazy_image(self, system):
        return f"docker://127.0.0.1:{self.reg.port}/{LAZY[system][1]}:{TAG}"

    def artifact_bytes(self):
        """Manifest, config and layers of the index artifact, found as a node finds it."""
        with open(os.path.join(self.layout, "index.json")) as f:
            subject = json.load(f)["manifests"][0]["digest"]
        try:
            listed, _ = self.reg.get_json(f"/v2/{REPO}/referrers/{subject}", INDEX_MT)
        except OSError:   # distribution 2.8 has no referrers API: the tag schema
            listed, _ = self.reg.get_json(f"/v2/{REPO}/manifests/{subject.replace(':', '-')}", INDEX_MT)
        ours = [m for m in listed.get("manifests", []) if m.get("artifactType") == ARTIFACT_TYPE]
        if not ours:
            raise RuntimeError(f"no {ARTIFACT_TYPE} artifact listed for {subject}: {listed}")
        manifest, size = self.reg.get_json(f"/v2/{REPO}/manifests/{ours[0]['digest']}", MANIFEST_MT)
        return size + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])

    # --- per repetition
    def step(self, system, metric, fn, reg=None):
        """fn() -> seconds, from a cold page cache; adds them and the blob bytes
        the registry (reg, else the bench's) served meanwhile (the unmount
        after fn included)."""
        reg = reg or self.reg
        self.h.drop_caches()
        mark = reg.log_size()
        try:
            seconds = fn()
        except Exception as e:        # one failed cell, not a lost run
            self.b.log(f"registry: {system} {metric}: {e}")
            self.notes["errors"][f"{system} {metric}"] = str(e)[-1000:]
            return
        self.b.add(system, metric, seconds)
        self.b.add(system, f"{metric}_bytes", reg.blob_bytes(mark))

    # The timed parts below start from an empty cache (and, for way 1, no
    # layout): rep() clears them before step() drops the page cache.
    def first_file(self, o, before=None):
        """[before()] + mount + cat of the first file; then unmount, untimed."""
        t0 = time.perf_counter()
        try:
            if before:
                before()
            o.mount()
            self.h.run(["cat", os.path.join(o.mnt, self.notes["first_file"].lstrip("/"))])
            return time.perf_counter() - t0
        finally:
            o.stop()

    def run_true(self, o, before=None):
        """[before()] + `ocimount run IMAGE -- true` (which unmounts before it returns)."""
        t0 = time.perf_counter()
        if before:
            before()
        o.cli("run", o.layout, "--", "true", env=self.env)
        return time.perf_counter() - t0

    def read_all(self, o, system):
        """Mount + read every file, as run.py's "read all" rows do; then
        what the daemon's span digest checks cost, from its log."""
        try:
            return o.mount() + self.b.tar_read(o.mnt)
        finally:
            o.stop()
            self.b.add(system, "read_all_checks", self.h.digest_check_seconds(o.cache))
            self.b.add(system, "read_all_checks_wall", self.h.digest_check_seconds(o.cache, "wall"))

    def rep(self, rep):
        self.b.log(f"rep {rep}/{self.b.a.reps}: registry")
        dest = os.path.join(self.dir, "copy")
        copy = ["skopeo", "copy", "--src-tls-verify=false", self.image, f"oci:{dest}:{TAG}"]
        local = self.node("local", dest)
        noindex = self.node("noindex", self.image, ["--no-remote-index"])
        indexed = self.node("index", self.image)
        runs = self.notes["run"] == "measured"

        def fresh(*nodes):
            shutil.rmtree(dest, ignore_errors=True)
            for o in nodes:
                o.stop()
                shutil.rmtree(o.cache, ignore_errors=True)

        fresh()
        self.step("skopeo-copy", "copy", lambda: self.h.timed(copy))
        fresh(local)
        self.step("registry-skopeo", "first_file", lambda: self.first_file(local, lambda: self.h.run(copy)))
        if runs:
            fresh(local)
            self.step("registry-skopeo", "run", lambda: self.run_true(local, lambda: self.h.run(copy)))
        for key, o in (("registry-noindex", noindex), ("registry-index", indexed)):
            fresh(o)
            self.step(key, "first_file", lambda: self.first_file(o))
            if runs:
                fresh(o)
                self.step(key, "run", lambda: self.run_true(o))
            fresh(o)
            self.step(key, "read_all", lambda: self.read_all(o, key))
        fresh(local, noindex, indexed)
        for tag, rate in LINKS:
            try:
                paced = link.Link(self.reg.storage, os.path.join(self.dir, f"link-{tag}"), rate)
                paced.__enter__()
            except Exception as e:
                for system in (f"skopeo-copy@{tag}", f"registry-noindex@{tag}"):
                    self.notes["errors"][f"{system} link"] = f"no paced link: {e}"[-1000:]
                continue
            try:
                image = f"docker://{paced.host_port}/{REPO}:{TAG}"
                copy_paced = ["skopeo", "copy", "--src-tls-verify=false", image, f"oci:{dest}:{TAG}"]
                fresh()
                self.step(f"skopeo-copy@{tag}", "copy", lambda: self.h.timed(copy_paced),
                          reg=paced.registry)
                o = self.node(f"noindex-{tag}", image, ["--no-remote-index"])
                fresh(o)
                self.step(f"registry-noindex@{tag}", "first_file", lambda: self.first_file(o),
                          reg=paced.registry)
                fresh(o)
            finally:
                paced.stop()
        fresh()
        for key in LAZY:
            o = self.node(key.split("-", 1)[1], self.lazy_image(key), ["--no-remote-index"])
            fresh(o)
            self.step(key, "first_file", lambda: self.first_file(o))
            if key not in self.notes.setdefault("lazy_checked", []):
                self.note_fallbacks(key, o)
            if runs:
                fresh(o)
                self.step(key, "run", lambda: self.run_true(o))
            fresh(o)
            self.step(key, "read_all", lambda: self.read_all(o, key))
            fresh(o)

    def note_fallbacks(self, system, o):
        """Once a way: how many of its layers fell back to a full pass, from
        the node's `inspect`, which says what each index was built from."""
        self.notes["lazy_checked"].append(system)
        p = o.cli("inspect", "--json", o.layout, stdout=subprocess.PIPE, ok=range(256))
        try:
            layers = json.loads(p.stdout)["layers"]
        except (ValueError, KeyError):
            return
        full = sum(1 for layer in layers if "full" in str(layer.get("indexed_from", "")))
        line = f"{LAZY[system][0]}: {full} of {len(layers)} layers by a full pass"
        prior = self.notes.get("lazy_fallbacks")
        self.notes["lazy_fallbacks"] = f"{prior}; {line}" if prior else line


def measure(bench, h):
    """The registry rows, bench.a.reps times; h is run.py's module. Failures
    are noted in the result, not raised: the rest of the run stands."""
    s = Section(bench, h)
    bench.notes["registry"] = s.notes
    try:
        s.setup()
        for rep in range(1, bench.a.reps + 1):
            s.rep(rep)
    except Exception as e:
        bench.log(f"registry: {e}")
        s.notes["error"] = str(e)[-2000:]
    finally:
        s.reg.stop()
    med = {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in bench.samples.items()}
    for line in ratio_lines(med, s.notes):
        bench.log(f"registry: {line}")


# ------------------------------------------------------------------ report
def fmt_bytes(v):
    if v is None:
        return "–"
    return f"{v / 1024:.1f} KiB" if v < 1 << 20 else f"{v / (1 << 20):.1f} MiB"


def goal_rows(med, notes):
    rows = []
    for label, system, metric, kind, limit in GOALS:
        v = med.get(system, {}).get(metric)
        if v is None:
            rows.append((label, "–", "not measured"))
            continue
        if kind in ("of_read_all", "of_local_reads"):
            if kind == "of_read_all":
                whole = med.get(system, {}).get("read_all")
            else:
                whole = sum(med.get(system, {}).get(m) or 0 for m in ("read_cold", "read_warm", "read_disk"))
            if not whole:
                rows.append((label, "–", "not measured"))
                continue
            x, shown = v / whole, f"{100 * v / whole:.2f} % ({v * 1000:.1f} ms of {whole:.2f} s)"
            wall = med.get(system, {}).get(f"{metric}_wall")
            if wall is not None:
                shown += f"; wall {100 * wall / whole:.2f} %"
        elif kind == "abs":
            x, shown = v, f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
        elif kind == "of_full_pass":
            full = med.get("registry-noindex", {}).get(metric)
            if not full:
                rows.append((label, "–", "not measured"))
                continue
            x, shown = v / full, f"{v / full:.2f}× ({v:.2f} s ÷ {full:.2f} s)"
        elif kind == "of_layers":
            x = v / layer_bytes(notes, system)
            shown = f"{100 * x:.2f} %"
            if system == "registry-index" and notes.get("artifact_bytes"):
                shown += f" (the artifact: {100 * notes['artifact_bytes'] / notes['layer_bytes']:.2f} %)"
        else:
            link = system.partition("@")[2]
            copy = med.get("skopeo-copy" + (f"@{link}" if link else ""), {}).get("copy")
            if not copy:
                rows.append((label, "–", "not measured"))
                continue
            x, shown = v / copy, f"{v / copy:.2f}×"
        rows.append((label, shown, "met" if x <= limit else "**missed**"))
    return rows


def ratio_lines(med, notes):
    """The two ratios issue 10 is judged by, as sentences (and the other bytes of way 3)."""
    out = []
    nf = med.get("registry-noindex", {}).get("first_file")
    copy = med.get("skopeo-copy", {}).get("copy")
    if nf and copy:
        out.append(f"way 2 first file ÷ `skopeo copy` alone: **{nf / copy:.2f}×** "
                   f"({nf:.3f} s ÷ {copy:.3f} s)")
    layers = notes.get("layer_bytes")
    for metric, what in (("first_file", "first file"), ("run", "`run`"), ("read_all", "read everything")):
        v = med.get("registry-index", {}).get(f"{metric}_bytes")
        if v is not None and layers:
            out.append(f"way 3 {what} blob bytes ÷ compressed layer bytes: **{v / layers:.4f}** "
                       f"({v:.0f} ÷ {layers})")
    return out


def markdown(res, fmt_value):
    """The registry section of the report (no lines for results without one)."""
    notes = res.get("registry")
    if not notes:
        return []
    med = res["medians"]
    layers = notes.get("layer_bytes")
    first = notes.get("first_file") or "?"
    versions = notes.get("versions", {})
    lines = [
        "", "## Registry", "",
        f"The gzip image served by `docker-registry serve` on 127.0.0.1, plain HTTP "
        f"({versions.get('docker-registry', '?')}; {versions.get('skopeo', '?')}), filled with "
        "`skopeo copy --all --preserve-digests`. Every measure starts from an empty ocimount cache "
        "(a node that never saw the image) and a dropped page cache.", "",
        f"- **first file**: `{first}` (the first of {', '.join(FIRST_FILES)} the image has), read "
        "through a mount; the time runs from the start (`skopeo copy` for way 1, else `ocimount mount`) "
        "until `cat` has read it; the unmount that follows is not timed.",
        "- **blob bytes**: the response sizes of the `GET /v2/…/blobs/…` lines of the registry's access "
        "log, from the start of the measure until the mount is gone: layers, the config and (way 3) "
        "the artifact's blobs; manifests are not counted. **of the layers**: against the compressed "
        f"layers, {fmt_bytes(layers)} ({layers} bytes); for ways 4 and 5, against their own image's.",
        "- **ways 4 and 5**: the same image made lazily pullable by the real producers "
        "(`scripts/make-lazy-images.sh`: stargz-snapshotter's `estargz` package, no files prioritised; "
        "`skopeo copy --dest-compress-format zstd:chunked`), pushed as they are, and read with "
        "`--no-remote-index`: through their tables of contents where a layer's can be used, by a full "
        "pass where not"
        + (f" ({notes['lazy_fallbacks']})" if notes.get("lazy_fallbacks") else "") + ".",
        "",
    ]
    if notes.get("error"):
        lines += [f"**Not measured:** {notes['error'].strip().splitlines()[0]}", ""]
    lines += ["| way | measure | time | blob bytes | of the layers |", "|---|---|---:|---:|---:|"]
    labels = dict(WAYS)
    shown = set()
    for system, metric, what in ROWS:
        v, b = med.get(system, {}).get(metric), med.get(system, {}).get(f"{metric}_bytes")
        failed = f"{system} {metric}" in notes.get("errors", {})
        own = layer_bytes(notes, system)
        cells = [fmt_value(v, "s") if v is not None else ("failed" if failed else "–"), fmt_bytes(b),
                 f"{100 * b / own:.1f} %" if b is not None and own else "–"]
        way = labels[system] if system not in shown else ""
        shown.add(system)
        lines.append(f"| {way} | {what.format(file=first)} | " + " | ".join(cells) + " |")
    lines.append("")
    if notes.get("run", "measured") != "measured":
        lines += [f"`run`: {notes['run']}.", ""]
    for k, e in notes.get("errors", {}).items():
        lines += [f"Failed, {k}: `{(e.strip().splitlines() or ['?'])[0]}`", ""]
    if "index_push_seconds" in notes:
        art = notes.get("artifact_bytes")
        share = f", {100 * art / layers:.2f} % of the compressed layers" if art and layers else ""
        lines += [f"The artifact of way 3 was published once beforehand by a node with a cache of its "
                  f"own, not timed above: `ocimount index push` took "
                  f"{fmt_value(notes['index_push_seconds'], 's')} (a full pass over the layers, then the "
                  f"upload); the artifact (manifest, config, indexes) is {fmt_bytes(art)}{share}. "
                  f"It said: `{notes.get('index_push_output', '')}`", ""]
    lines += ["Goals (issues 10 and 22; span digest checks: the CPU time the daemons' threads spent "
              "hashing spans to check them, from the tally each logs when it ends; \"wall\": the wall "
              "time around that hashing, which also counts a thread's waits for a core):", "",
              "| goal | measured | |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in goal_rows(med, notes)]
    rl = ratio_lines(med, notes)
    if rl:
        lines += [""] + [f"- {x}" for x in rl]
    return lines
