#!/usr/bin/env python3
"""Helpers for scripts/bench/build-image.sh: real files in, layer content out.

  image.py pkgsplit MORE.tar BASE.tar N OUTDIR   dpkg file lists of the packages
                                                  MORE has and BASE lacks, in N
                                                  groups of similar installed size
  image.py large ROOTFS PATH MIB                 a large file made of the rootfs's
                                                  own files, concatenated
  image.py small ROOTFS DIR COUNT                COUNT small files cut from the
                                                  rootfs's text files
Everything is deterministic: the same inputs give the same bytes.
"""
import os
import random
import sys
import tarfile


def dpkg_status(tar):
    """{package: installed size in KiB} from var/lib/dpkg/status in TAR."""
    member = tar.getmember("./var/lib/dpkg/status")
    text = tar.extractfile(member).read().decode("utf-8", "replace")
    out = {}
    for para in text.split("\n\n"):
        fields = {}
        for line in para.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "Package" in fields and "install ok installed" in fields.get("Status", ""):
            out[fields["Package"]] = int(fields.get("Installed-Size", "0") or 0)
    return out


def pkgsplit(more_path, base_path, n, outdir):
    with tarfile.open(base_path) as base:
        old = dpkg_status(base)
    with tarfile.open(more_path) as more:
        new = dpkg_status(more)
        members = {m.name: m for m in more.getmembers()}
        lists = {}
        for name in members:
            if name.startswith("./var/lib/dpkg/info/") and name.endswith(".list"):
                pkg = os.path.basename(name)[: -len(".list")].split(":")[0]
                lists[pkg] = more.extractfile(members[name]).read().decode("utf-8", "surrogateescape")
    added = sorted(p for p in new if p not in old)
    total = sum(new[p] for p in added) or 1
    groups, acc = [[] for _ in range(n)], 0
    for p in added:                      # contiguous by name, similar sizes
        groups[min(n - 1, acc * n // total)].append(p)
        acc += new[p]
    merged = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}
    os.makedirs(outdir, exist_ok=True)
    for i, group in enumerate(groups):
        names = []
        for p in group:
            for line in lists.get(p, "").splitlines():
                if not line.startswith("/") or line == "/.":
                    continue
                name = "." + line
                top = line.split("/")[1]
                if name not in members and top in merged:   # merged /usr
                    name = "./usr" + line
                if name in members:
                    names.append(name)
        with open(os.path.join(outdir, f"group{i + 1}.list"), "w", encoding="utf-8",
                  errors="surrogateescape") as f:
            f.write("".join(x + "\n" for x in sorted(set(names))))
        with open(os.path.join(outdir, f"group{i + 1}.pkgs"), "w") as f:
            f.write(" ".join(group) + "\n")


def regular_files(root, subdirs):
    for sub in subdirs:
        top = os.path.join(root, sub)
        for d, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(d, name)
                if os.path.isfile(p) and not os.path.islink(p):
                    yield p


def large(root, path, mib):
    want = mib << 20
    sources = list(regular_files(root, ["usr/lib", "usr/bin", "usr/share", "etc"]))
    if not sources:
        sys.exit("no files to build the large file from")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    done = 0
    with open(path, "wb") as out:
        while done < want:
            for src in sources:
                with open(src, "rb") as f:
                    data = f.read(want - done)
                out.write(data)
                done += len(data)
                if done >= want:
                    break


def small(root, outdir, count):
    text = bytearray()
    for src in regular_files(root, ["usr/share/perl5", "usr/share/perl", "usr/lib/python3.11",
                                    "usr/share/doc", "etc"]):
        with open(src, "rb") as f:
            data = f.read(1 << 16)
        if b"\0" not in data:
            text += data
        if len(text) > 8 << 20:
            break
    if len(text) < 1 << 16:
        text = (text or b"ocimount benchmark\n") * ((1 << 16) // max(1, len(text)) + 1)
    rng = random.Random(5)
    for i in range(count):
        d = os.path.join(outdir, f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        size = min(len(text), int(rng.lognormvariate(7.0, 1.0)) + 16)   # median ~1 KiB
        start = rng.randrange(0, len(text) - size + 1)
        with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
            f.write(text[start:start + size])


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pkgsplit":
        pkgsplit(args[0], args[1], int(args[2]), args[3])
    elif cmd == "large":
        large(args[0], args[1], int(args[2]))
    elif cmd == "small":
        small(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
