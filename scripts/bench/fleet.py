"""The FLEET rows of the benchmark: nodes behind a pull-through mirror (stdlib only).

An upstream registry (Debian's `docker-registry` on 127.0.0.1, plain HTTP)
holds the gzip image and the index artifact one node published with
`ocimount index push` (a cache of its own, untimed). A second
`docker-registry` runs as a pull-through cache of the upstream
(distribution's `proxy.remoteurl`), and a registries.conf names it as the
mirror of the upstream's location (`insecure = true` for the mirror only,
so that no node can fall back to the plain-HTTP primary). NODES nodes, each
with an empty `--cache` of its own and the page cache dropped, then run
`ocimount --registries-conf FILE cat docker://UPSTREAM/… FIRST_FILE` one
after another, as a fleet rolling out does.

Measured: each node's time to the first file (the whole `ocimount cat`:
manifest, config, the artifact, the spans), and, from the two access logs
(as in registry.py: the bytes of the `GET …/blobs/…` answers), the bytes
the upstream served (layers, and all blobs with the config and the
artifact's) and the bytes the mirror served to the nodes.

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


def measure_fleet(bin, layout, work, nodes=NODES, log=print):
    """The scenario; returns the notes run.py keeps under "fleet"."""
    layers = layers_of(layout)
    n = {"nodes": nodes, "layer_count": len(layers), "layer_bytes": sum(layers.values()),
         "errors": []}
    upstream = Registry(os.path.join(work, "upstream"))
    mirror = None
    try:
        upstream.start()
        image = f"docker://127.0.0.1:{upstream.port}/{REPO}:{TAG}"
        log(f"fleet: upstream 127.0.0.1:{upstream.port}, skopeo copy of {layout}")
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

        pusher = os.path.join(work, "pusher")
        p = run([bin, "--cache", pusher, "--tls-verify=false", "index", "push", image],
                stdout=subprocess.PIPE)
        n["index_push_output"] = p.stdout.decode().strip()
        shutil.rmtree(pusher, ignore_errors=True)

        mirror = Registry(os.path.join(work, "mirror"), remote=f"http://127.0.0.1:{upstream.port}")
        mirror.start()
        conf = os.path.join(work, "registries.conf")
        with open(conf, "w") as f:
            f.write(f'[[registry]]\nprefix = "127.0.0.1:{upstream.port}"\n'
                    f'location = "127.0.0.1:{upstream.port}"\n\n'
                    f'[[registry.mirror]]\nlocation = "127.0.0.1:{mirror.port}"\ninsecure = true\n')
        log(f"fleet: mirror 127.0.0.1:{mirror.port} (pull-through cache), {nodes} nodes")
        env = {k: v for k, v in os.environ.items()
               if k not in ("CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE",
                            "OCIMOUNT_REGISTRY_CREDS", "OCIMOUNT_TLS_VERIFY")}
        env["RUST_LOG"] = "ocimount=info"
        upstream.settle()
        up_start = up_mark = upstream.log_size()
        mirror_mark = mirror.log_size()
        per_node = []
        for i in range(1, nodes + 1):
            cache = os.path.join(work, f"node{i}")
            shutil.rmtree(cache, ignore_errors=True)
            n["page_cache_dropped"] = drop_caches()
            t0 = time.perf_counter()
            p = run([bin, "--cache", cache, "--registries-conf", conf, "cat", image, first],
                    stdout=subprocess.PIPE, env=env)
            seconds = time.perf_counter() - t0
            if p.stdout != want:
                raise RuntimeError(f"node {i}: {first} differs from the layout's")
            up = upstream.blob_bytes_by_digest(up_mark)
            served = mirror.blob_bytes_by_digest(mirror_mark)
            up_mark, mirror_mark = upstream.log_size(), mirror.log_size()
            per_node.append({
                "seconds": seconds,
                "indexes_taken": p.stderr.decode(errors="replace").count("using the published index"),
                "upstream_layer_bytes": sum(b for d, b in up.items() if d in layers),
                "upstream_blob_bytes": sum(up.values()),
                "mirror_layer_bytes": sum(b for d, b in served.items() if d in layers),
                "mirror_blob_bytes": sum(served.values()),
            })
            log(f"fleet: node {i}: {seconds:.3f} s, upstream {per_node[-1]['upstream_layer_bytes']} "
                f"layer bytes, mirror {per_node[-1]['mirror_blob_bytes']} blob bytes")
            shutil.rmtree(cache, ignore_errors=True)
            if i == 1:
                # The cache stores a blob with a fetch of its own, which may still
                # run when node 1 is done: the next nodes start once it holds every
                # layer (bounded), as a fleet rolling out in waves does.
                asked = [d for d in served if d in layers]
                n["layers_read"] = len(asked)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < 60 and not all(
                        os.path.exists(mirror.blob_path(d)) for d in asked):
                    time.sleep(0.05)
                n["store_wait_seconds"] = time.perf_counter() - t0
        n["per_node"] = per_node
        up = upstream.blob_bytes_by_digest(up_start)
        n["upstream_layer_bytes"] = sum(b for d, b in up.items() if d in layers)
        n["upstream_blob_bytes"] = sum(up.values())
        n["upstream_max_layer_copies"] = max((up.get(d, 0) / s for d, s in layers.items() if s), default=0)
        n["mirror_layer_bytes"] = sum(x["mirror_layer_bytes"] for x in per_node)
        n["mirror_blob_bytes"] = sum(x["mirror_blob_bytes"] for x in per_node)
        n["first_file_seconds"] = [x["seconds"] for x in per_node]
        n["versions"] = {"docker-registry": upstream.version()}
    except Exception as e:
        log(f"fleet: {e}")
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
    if "per_node" not in n:
        return [f"not measured: {n.get('error', '?').strip().splitlines()[0]}"]
    t = n["first_file_seconds"]
    layers = n["layer_bytes"]
    return [
        f"upstream served {n['upstream_layer_bytes']} layer bytes "
        f"({n['upstream_layer_bytes'] / layers:.2f}× the {layers} compressed layer bytes; "
        f"{n['upstream_blob_bytes']} blob bytes with the config and the artifact)",
        f"mirror served {n['mirror_layer_bytes']} layer bytes to {n['nodes']} nodes "
        f"({n['mirror_blob_bytes']} blob bytes)",
        f"time to {n['first_file']}: min {fmt_s(min(t))}, median {fmt_s(statistics.median(t))}, "
        f"max {fmt_s(max(t))}; node 1 {fmt_s(t[0])}",
    ]


def markdown(res):
    n = res.get("fleet")
    if not n:
        return []
    lines = [
        "", "## Fleet behind a pull-through mirror", "",
        f"{n['nodes']} nodes, each with an empty cache, read `{n.get('first_file', '?')}` one after another "
        "with `ocimount --registries-conf FILE cat docker://UPSTREAM/…`, the file naming a "
        f"`docker-registry` pull-through cache ({n.get('versions', {}).get('docker-registry', '?')}) as the "
        "mirror of the upstream; the index artifact was published to the upstream once beforehand. "
        "Bytes: the `GET …/blobs/…` answers in each registry's access log; **of the layers**: against the "
        f"{n['layer_count']} compressed layers, {fmt_bytes(n['layer_bytes'])}.", "",
    ]
    if "per_node" not in n:
        return lines + [f"**Not measured:** {n.get('error', '?').strip().splitlines()[0]}", ""]
    layers = n["layer_bytes"]
    t = n["first_file_seconds"]
    lines += [
        "| measure | value | of the layers |", "|---|---:|---:|",
        f"| upstream served, layer blobs, all nodes | {fmt_bytes(n['upstream_layer_bytes'])} | "
        f"{n['upstream_layer_bytes'] / layers:.2f}× |",
        f"| upstream served, every blob (config, artifact) | {fmt_bytes(n['upstream_blob_bytes'])} | – |",
        f"| upstream served, most copies of one layer | {n['upstream_max_layer_copies']:.2f} | – |",
        f"| mirror served, layer blobs, all nodes | {fmt_bytes(n['mirror_layer_bytes'])} | "
        f"{n['mirror_layer_bytes'] / layers:.2f}× |",
        f"| mirror served, every blob, all nodes | {fmt_bytes(n['mirror_blob_bytes'])} | – |",
        f"| time to the first file, min / median / max | {fmt_s(min(t))} / {fmt_s(statistics.median(t))} / "
        f"{fmt_s(max(t))} | – |",
        "",
        "| node | time to the first file | published indexes taken | upstream, layer bytes | "
        "mirror, blob bytes |",
        "|---:|---:|---:|---:|---:|",
    ]
    if "store_wait_seconds" in n:
        lines[-3:-3] = ["", f"Node 1 read {n.get('layers_read', '?')} of the {n['layer_count']} layers (the "
                        "cache was asked for those only); node 2 started once the cache held them: "
                        f"{fmt_s(n['store_wait_seconds'])} after node 1 was done."]
    for i, x in enumerate(n["per_node"], 1):
        lines.append(f"| {i} | {fmt_s(x['seconds'])} | {x['indexes_taken']} of {n['layer_count']} | "
                     f"{fmt_bytes(x['upstream_layer_bytes'])} | {fmt_bytes(x['mirror_blob_bytes'])} |")
    return lines + [""]


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
