"""The FLEET rows of the benchmark: nodes behind a pull-through mirror (stdlib only).

An upstream registry (Debian's `docker-registry` on 127.0.0.1, plain HTTP)
holds the gzip image. A second `docker-registry` runs as a pull-through
cache of the upstream (distribution's `proxy.remoteurl`), and a
registries.conf names it as the mirror of the upstream's location
(`insecure = true` for the mirror; for the primary only where a node must
publish there). NODES nodes, each with an empty `--cache` of its own, then
read the first file in two waves, as a fleet rolling out does: node 1
alone, then, once the mirror holds what node 1 read, nodes 2..NODES at once
(`ocimount --registries-conf FILE cat docker://UPSTREAM/… FIRST_FILE`).

Three fleets, each with registries of its own:
- `artifact`: the index artifact was published beforehand (`ocimount index
  push`, a cache of its own, untimed);
- `publish`: no artifact; node 1 runs `mount --publish-index` (full passes,
  then the publish to the primary), reads the file in the mount and
  unmounts; the later nodes find what it published;
- `none`: no artifact and no `--publish-index`: every node makes full passes.

Measured: each node's time to the first file (the whole command), and, from
the two access logs (as in registry.py: the bytes of the `GET …/blobs/…`
answers), the bytes the upstream served (layers, and all blobs with the
config and the artifact's), in all and after node 1, and the bytes the
mirror served to the nodes.

Called by run.py after the registry rows (`measure`, `markdown`), or alone
on any OCI layout, offline:

  python3 scripts/bench/fleet.py --bin target/release/ocimount --layout DIR [--nodes 8]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from registry import FIRST_FILES, Registry  # noqa: E402

REPO = "bench/image"
TAG = "latest"
NODES = 8
STEP_TIMEOUT = 600


def layers_of(layout):
    """{digest: size} of the layers of the layout's only image."""
    def blob(d):
        return os.path.join(layout, "blobs", "sha256", d.split(":")[1])
    with open(os.path.join(layout, "index.json")) as f:
        doc = json.load(f)
    while "manifests" in doc:
        with open(blob(doc["manifests"][0]["digest"])) as f:
            doc = json.load(f)
    return {layer["digest"]: layer["size"] for layer in doc["layers"]}


def of_layers(per_digest, layers):
    """The bytes of per_digest ({digest: bytes}) that are layers'."""
    return sum(b for d, b in per_digest.items() if d in layers)


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, timeout=STEP_TIMEOUT, **kw)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{err[-2000:]}")
    return p


def drop_caches():
    """Drop the page cache when allowed to (root); the bench always is."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


FLEETS = (
    ("artifact", "the artifact published beforehand (`index push`)"),
    ("publish", "no artifact; node 1 mounts with `--publish-index`"),
    ("none", "no artifact, no `--publish-index`"),
)


def measure_fleet(bin, layout, work, nodes=NODES, log=print):
    """The three fleets; returns the notes run.py keeps under "fleet"."""
    layers = layers_of(layout)
    n = {"nodes": nodes, "layer_count": len(layers), "layer_bytes": sum(layers.values()),
         "fleets": {}}
    for mode, _ in FLEETS:
        n["fleets"][mode] = one_fleet(bin, layout, os.path.join(work, mode), mode, nodes, layers, log)
        if "error" in n["fleets"][mode]:
            n["error"] = f"{mode}: {n['fleets'][mode]['error']}"
    return n


def node_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE",
                        "OCIMOUNT_REGISTRY_CREDS", "OCIMOUNT_TLS_VERIFY")}
    env["RUST_LOG"] = "ocimount=info"
    return env


def cat_node(bin, cache, conf, image, first, want):
    """One node: `cat` with an empty cache; (seconds, stderr)."""
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    p = run([bin, "--cache", cache, "--registries-conf", conf, "cat", image, first],
            stdout=subprocess.PIPE, env=node_env())
    seconds = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if p.stdout != want:
        raise RuntimeError(f"{cache}: {first} differs from the layout's")
    return seconds, p.stderr.decode(errors="replace")


def publishing_node(bin, cache, conf, image, first, want, mountpoint):
    """Node 1 of the `publish` fleet: mount with --publish-index, read the
    file in the mount, unmount; (seconds, stderr of the mount)."""
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(mountpoint, exist_ok=True)
    t0 = time.perf_counter()
    p = run([bin, "--cache", cache, "--registries-conf", conf, "mount", "--publish-index",
             image, mountpoint], env=node_env())
    try:
        with open(os.path.join(mountpoint, first.lstrip("/")), "rb") as f:
            got = f.read()
        seconds = time.perf_counter() - t0
    finally:
        subprocess.run([bin, "--cache", cache, "umount", "--lazy", mountpoint],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    shutil.rmtree(cache, ignore_errors=True)
    if got != want:
        raise RuntimeError(f"node 1: {first} in the mount differs from the layout's")
    stderr = p.stderr.decode(errors="replace")
    if "published the indexes of" not in stderr:
        raise RuntimeError(f"node 1 did not publish its indexes:\n{stderr[-2000:]}")
    return seconds, stderr


def one_fleet(bin, layout, work, mode, nodes, layers, log):
    n = {"mode": mode, "errors": []}
    os.makedirs(work, exist_ok=True)
    upstream = Registry(os.path.join(work, "upstream"))
    mirror = None
    try:
        upstream.start()
        image = f"docker://127.0.0.1:{upstream.port}/{REPO}:{TAG}"
        log(f"fleet {mode}: upstream 127.0.0.1:{upstream.port}, skopeo copy of {layout}")
        run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{layout}:{TAG}", image])
        scratch = os.path.join(work, "scratch")
        first = n["first_file"] = next((f for f in FIRST_FILES if subprocess.run(
            [bin, "--cache", scratch, "cat", layout, f], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=STEP_TIMEOUT).returncode == 0), None)
        if first is None:
            raise RuntimeError(f"none of {', '.join(FIRST_FILES)} is in the image")
        want = run([bin, "--cache", scratch, "cat", layout, first], stdout=subprocess.PIPE).stdout
        shutil.rmtree(scratch, ignore_errors=True)

        if mode == "artifact":
            pusher = os.path.join(work, "pusher")
            p = run([bin, "--cache", pusher, "--tls-verify=false", "index", "push", image],
                    stdout=subprocess.PIPE)
            n["index_push_output"] = p.stdout.decode().strip()
            shutil.rmtree(pusher, ignore_errors=True)

        mirror = Registry(os.path.join(work, "mirror"), remote=f"http://127.0.0.1:{upstream.port}")
        mirror.start()
        conf = os.path.join(work, "registries.conf")
        # The primary is plain HTTP: allowed only where node 1 must publish
        # there, so that elsewhere a node that fell back to it would fail.
        with open(conf, "w") as f:
            f.write(f'[[registry]]\nprefix = "127.0.0.1:{upstream.port}"\n'
                    f'location = "127.0.0.1:{upstream.port}"\n'
                    f'insecure = {"true" if mode == "publish" else "false"}\n\n'
                    f'[[registry.mirror]]\nlocation = "127.0.0.1:{mirror.port}"\ninsecure = true\n')
        log(f"fleet {mode}: mirror 127.0.0.1:{mirror.port} (pull-through cache), {nodes} nodes")
        upstream.settle()
        up_start = upstream.log_size()
        mirror_start = mirror.log_size()

        # Wave 1: node 1 alone.
        n["page_cache_dropped"] = drop_caches()
        cache = os.path.join(work, "node1")
        if mode == "publish":
            seconds, stderr = publishing_node(bin, cache, conf, image, first, want,
                                              os.path.join(work, "mnt"))
        else:
            seconds, stderr = cat_node(bin, cache, conf, image, first, want)
        n["node1_seconds"] = seconds
        n["node1_indexes_taken"] = stderr.count("using the published index")
        upstream.settle()
        mirror.settle()
        served = mirror.blob_bytes_by_digest(mirror_start)
        up_node1 = upstream.blob_bytes_by_digest(up_start)
        n["node1_upstream_layer_bytes"] = of_layers(up_node1, layers)
        n["node1_mirror_layer_bytes"] = of_layers(served, layers)
        log(f"fleet {mode}: node 1: {seconds:.3f} s, upstream {n['node1_upstream_layer_bytes']} "
            f"layer bytes")
        # The cache stores a blob with a fetch of its own, which may still run
        # when node 1 is done: wave 2 starts once it holds every layer node 1
        # read (bounded), as a fleet rolling out in waves does.
        asked = [d for d in served if d in layers]
        n["layers_read"] = len(asked)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60 and not all(
                os.path.exists(mirror.layer_link_path(REPO, d)) for d in asked):
            time.sleep(0.05)
        n["store_wait_seconds"] = time.perf_counter() - t0
        up_mark, mirror_mark = upstream.log_size(), mirror.log_size()

        # Wave 2: the other nodes at once.
        drop_caches()
        with ThreadPoolExecutor(max_workers=max(1, nodes - 1)) as pool:
            wave = list(pool.map(
                lambda i: cat_node(bin, os.path.join(work, f"node{i}"), conf, image, first, want),
                range(2, nodes + 1)))
        n["wave_seconds"] = [s for s, _ in wave]
        n["wave_indexes_taken"] = [e.count("using the published index") for _, e in wave]
        up = upstream.blob_bytes_by_digest(up_mark)
        served = mirror.blob_bytes_by_digest(mirror_mark)
        n["wave_upstream_layer_bytes"] = of_layers(up, layers)
        n["wave_mirror_layer_bytes"] = of_layers(served, layers)
        log(f"fleet {mode}: nodes 2-{nodes}: median {statistics.median(n['wave_seconds']):.3f} s, "
            f"upstream {n['wave_upstream_layer_bytes']} layer bytes")

        up = upstream.blob_bytes_by_digest(up_start)
        served = mirror.blob_bytes_by_digest(mirror_start)
        n["upstream_layer_bytes"] = of_layers(up, layers)
        n["upstream_blob_bytes"] = sum(up.values())
        n["upstream_max_layer_copies"] = max((up.get(d, 0) / s for d, s in layers.items() if s), default=0)
        n["mirror_layer_bytes"] = of_layers(served, layers)
        n["mirror_blob_bytes"] = sum(served.values())
        n["versions"] = {"docker-registry": upstream.version()}
    except Exception as e:
        log(f"fleet {mode}: {e}")
        n["error"] = str(e)[-2000:]
    finally:
        if mirror:
            mirror.stop()
        upstream.stop()
    return n


def measure(bench, h):
    """run.py's hook: the fleet rows on the bench's gzip image, once (NODES nodes are the samples)."""
    work = os.path.join(bench.work, "fleet")
    os.makedirs(work, exist_ok=True)
    bench.log("fleet: nodes behind a pull-through mirror")
    bench.notes["fleet"] = measure_fleet(bench.bin, bench.layouts["gzip"], work,
                                         nodes=bench.a.fleet_nodes, log=bench.log)
    for line in summary(bench.notes["fleet"]):
        bench.log(f"fleet: {line}")


# ------------------------------------------------------------------ report
def fmt_bytes(v):
    if v is None:
        return "–"
    return f"{v / 1024:.1f} KiB" if v < 1 << 20 else f"{v / (1 << 20):.1f} MiB"


def fmt_s(v):
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def summary(n):
    """The rows as sentences (the log, and the standalone run)."""
    lines = []
    for mode, _ in FLEETS:
        f = n.get("fleets", {}).get(mode)
        if f is None:
            continue
        if "wave_seconds" not in f:
            lines.append(f"{mode}: not measured: {f.get('error', '?').strip().splitlines()[0]}")
            continue
        layers = n["layer_bytes"]
        t = f["wave_seconds"]
        lines.append(
            f"{mode}: upstream served {f['upstream_layer_bytes'] / layers:.2f}× the layers "
            f"({f['wave_upstream_layer_bytes']} layer bytes after node 1), mirror "
            f"{f['mirror_layer_bytes'] / layers:.2f}×; node 1 {fmt_s(f['node1_seconds'])}, "
            f"nodes 2-{n['nodes']} median {fmt_s(statistics.median(t))}, max {fmt_s(max(t))}")
    return lines


def markdown(res):
    n = res.get("fleet")
    if not n:
        return []
    fleets = n.get("fleets", {})
    some = next((f for f in fleets.values() if "versions" in f), {})
    lines = [
        "", "## Fleet behind a pull-through mirror", "",
        f"{n['nodes']} nodes, each with an empty cache, read `{some.get('first_file', '?')}` with "
        "`ocimount --registries-conf FILE cat docker://UPSTREAM/…`, the file naming a "
        f"`docker-registry` pull-through cache ({some.get('versions', {}).get('docker-registry', '?')}) as "
        "the mirror of the upstream. They come in two waves: node 1 alone, then, once the mirror holds "
        f"what node 1 read, nodes 2–{n['nodes']} at once. Each fleet has registries of its own. "
        "Bytes: the `GET …/blobs/…` answers in each registry's access log, against the "
        f"{n['layer_count']} compressed layers ({fmt_bytes(n['layer_bytes'])}). On a miss, "
        "distribution 2.8's cache fetches a blob from the upstream twice (one stream to the client, "
        "one to store), so 2× is its floor for a layer node 1 reads whole.", "",
        f"| fleet | node 1 | nodes 2–{n['nodes']}, median / max | indexes taken (node 1; later nodes) | "
        "upstream, layer blobs | most copies of one layer | upstream after node 1 | mirror served, "
        "layer blobs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    layers = n["layer_bytes"]
    for mode, title in FLEETS:
        f = fleets.get(mode)
        if f is None:
            continue
        if "wave_seconds" not in f:
            lines.append(f"| {title} | not measured: {f.get('error', '?').strip().splitlines()[0]} "
                         "| | | | | | |")
            continue
        t = f["wave_seconds"]
        taken = f["wave_indexes_taken"]
        later = f"{min(taken)}" if min(taken) == max(taken) else f"{min(taken)}–{max(taken)}"
        lines.append(
            f"| {title} | {fmt_s(f['node1_seconds'])} | {fmt_s(statistics.median(t))} / {fmt_s(max(t))} | "
            f"{f['node1_indexes_taken']}; {later} of {n['layer_count']} | "
            f"{fmt_bytes(f['upstream_layer_bytes'])} ({f['upstream_layer_bytes'] / layers:.2f}×) | "
            f"{f['upstream_max_layer_copies']:.2f} | {fmt_bytes(f['wave_upstream_layer_bytes'])} | "
            f"{fmt_bytes(f['mirror_layer_bytes'])} ({f['mirror_layer_bytes'] / layers:.2f}×) |")
    lines += ["", "Wave 2 started once the mirror held the layers node 1 read: "
              + "; ".join(f"{mode} {fmt_s(f['store_wait_seconds'])} after node 1 ({f['layers_read']} "
                          f"of {n['layer_count']} layers)"
                          for mode, f in fleets.items() if "store_wait_seconds" in f) + ".", ""]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the ocimount binary")
    ap.add_argument("--layout", required=True, help="an OCI layout (tag latest) of one image")
    ap.add_argument("--nodes", type=int, default=NODES)
    ap.add_argument("--work", help="scratch directory (default: a new one under $TMPDIR, removed)")
    ap.add_argument("--json", help="also write the notes here")
    a = ap.parse_args()
    work = os.path.abspath(a.work) if a.work else tempfile.mkdtemp(prefix="ocimount-fleet-")
    try:
        n = measure_fleet(os.path.abspath(a.bin), os.path.abspath(a.layout), work, a.nodes,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(n, f, indent=1)
    print("\n".join(markdown({"fleet": n})))
    return 1 if "error" in n else 0


if __name__ == "__main__":
    sys.exit(main())
