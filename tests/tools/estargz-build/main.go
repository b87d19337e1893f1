// estargz-build converts the image of an OCI image layout into eStargz, using
// stargz-snapshotter's own estargz package (estargz.Build), and writes a new
// OCI image layout holding one image manifest.
//
// Build (offline, Debian bookworm: golang-go, golang-github-containerd-stargz-snapshotter-dev):
//
//	cd tests/tools/estargz-build && GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT .
//
// Usage:
//
//	estargz-build [flags] SRC_LAYOUT DST_LAYOUT
//
// SRC_LAYOUT/index.json must hold one entry, or one whose
// org.opencontainers.image.ref.name is -ref. If that entry is an image index
// (for example a multi-platform one), the manifest for -platform is taken
// (default: the only manifest, else the host's os/arch).
//
// Each layer of the manifest becomes one eStargz blob (gzip,
// application/vnd.oci.image.layer.v1.tar+gzip) whose descriptor carries the
// annotations containerd.io/snapshot/stargz/toc.digest (sha256 of the
// uncompressed TOC JSON) and io.containers.estargz.uncompressed-size. The
// config's rootfs.diff_ids are replaced by the new blobs' DiffIDs, and
// DST_LAYOUT/index.json points at the new manifest with the same ref name.
//
// With -prioritize (repeatable), the listed files (and their parent
// directories) are moved to the front of every layer that holds at least one
// of them, followed by the ".prefetch.landmark" entry; layers holding none of
// them get ".no.prefetch.landmark" at the front instead, as they do when no
// -prioritize is given.
//
// estargz.Build splits the tar into runtime.GOMAXPROCS(0) parts that it
// compresses in parallel; the part boundaries change the blob's bytes. -parts
// sets GOMAXPROCS so that the output does not depend on the machine (the
// default, 4, makes the output reproducible across machines).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

const (
	mtIndex     = "application/vnd.oci.image.index.v1+json"
	mtManifest  = "application/vnd.oci.image.manifest.v1+json"
	mtDockerML  = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerMan = "application/vnd.docker.distribution.manifest.v2+json"
	mtLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	refNameKey  = "org.opencontainers.image.ref.name"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	URLs        []string          `json:"urls,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

type index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz-build: error: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz-build: "+format+"\n", args...)
}

func main() {
	var (
		ref        = flag.String("ref", "", "ref name (tag) to take from SRC index.json; default: its only entry. Also the ref name written to DST")
		outRef     = flag.String("out-ref", "", "ref name to write in DST index.json (default: the source's)")
		plat       = flag.String("platform", "", "os/arch[/variant] to pick from an image index (default: the only manifest, else the host's)")
		chunkSize  = flag.Int("chunk-size", 0, "eStargz chunk size in bytes (0: the library default, 4 MiB)")
		level      = flag.Int("compression-level", 9, "gzip compression level (the library default is 9, gzip.BestCompression)")
		parts      = flag.Int("parts", 4, "GOMAXPROCS while building, which is the number of parts estargz.Build splits each layer into (0: leave as is)")
		prioritize listFlag
	)
	flag.Var(&prioritize, "prioritize", "file to prioritize (repeatable; a comma-separated list is split); see estargz.WithPrioritizedFiles")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] SRC_LAYOUT DST_LAYOUT\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	src, dst := flag.Arg(0), flag.Arg(1)
	if *parts > 0 {
		runtime.GOMAXPROCS(*parts)
	}
	var prio []string
	for _, p := range prioritize {
		for _, q := range strings.Split(p, ",") {
			if q = strings.TrimSpace(q); q != "" {
				prio = append(prio, q)
			}
		}
	}

	// --- source ---------------------------------------------------------
	var srcIndex index
	if err := readJSONFile(filepath.Join(src, "index.json"), &srcIndex); err != nil {
		die("%s is not an OCI image layout: %v", src, err)
	}
	top, err := pickRef(srcIndex, *ref)
	if err != nil {
		die("%s: %v", src, err)
	}
	refName := top.Annotations[refNameKey]
	if *outRef != "" {
		refName = *outRef
	}
	manDesc, err := resolveManifest(src, top, *plat)
	if err != nil {
		die("%s: %v", src, err)
	}
	var manifest map[string]json.RawMessage
	if err := readBlobJSON(src, manDesc, &manifest); err != nil {
		die("manifest: %v", err)
	}
	var configDesc descriptor
	var layers []descriptor
	if err := json.Unmarshal(manifest["config"], &configDesc); err != nil {
		die("manifest %s: config: %v", manDesc.Digest, err)
	}
	if err := json.Unmarshal(manifest["layers"], &layers); err != nil {
		die("manifest %s: layers: %v", manDesc.Digest, err)
	}
	var config map[string]json.RawMessage
	if err := readBlobJSON(src, configDesc, &config); err != nil {
		die("config: %v", err)
	}
	var rootfs struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	if err := json.Unmarshal(config["rootfs"], &rootfs); err != nil {
		die("config %s: rootfs: %v", configDesc.Digest, err)
	}
	if len(rootfs.DiffIDs) != len(layers) {
		die("config %s has %d diff_ids for %d layers", configDesc.Digest, len(rootfs.DiffIDs), len(layers))
	}

	// --- destination ------------------------------------------------------
	if _, err := os.Stat(filepath.Join(dst, "index.json")); err == nil {
		die("%s already holds an index.json; give a new directory", dst)
	}
	blobDir := filepath.Join(dst, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		die("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dst, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		die("%v", err)
	}

	newLayers := make([]descriptor, len(layers))
	for i, l := range layers {
		nl, diffID, err := convertLayer(src, dst, l, prio, *chunkSize, *level)
		if err != nil {
			die("layer %d (%s): %v", i, l.Digest, err)
		}
		logf("layer %d: %s (%d bytes) -> %s (%d bytes), toc %s, diff_id %s",
			i, l.Digest, l.Size, nl.Digest, nl.Size, nl.Annotations[estargz.TOCJSONDigestAnnotation], diffID)
		newLayers[i] = nl
		rootfs.DiffIDs[i] = diffID
	}

	// config: only rootfs.diff_ids change; other fields are kept as they are.
	if config["rootfs"], err = json.Marshal(rootfs); err != nil {
		die("%v", err)
	}
	newConfig, err := writeJSONBlob(dst, config, configDesc.MediaType)
	if err != nil {
		die("config: %v", err)
	}
	newConfig.Annotations = configDesc.Annotations

	manifest["config"] = mustJSON(newConfig)
	manifest["layers"] = mustJSON(newLayers)
	manifest["mediaType"] = mustJSON(mtManifest)
	newMan, err := writeJSONBlob(dst, manifest, mtManifest)
	if err != nil {
		die("manifest: %v", err)
	}
	newMan.Platform = manDesc.Platform
	if refName != "" {
		newMan.Annotations = map[string]string{refNameKey: refName}
	}
	out := index{SchemaVersion: 2, MediaType: mtIndex, Manifests: []descriptor{newMan}}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		die("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dst, "index.json"), append(b, '\n'), 0o644); err != nil {
		die("%v", err)
	}
	logf("wrote %s: manifest %s (%d bytes), ref %q", dst, newMan.Digest, newMan.Size, refName)
}

// pickRef returns the index.json entry named ref, or the only entry.
func pickRef(idx index, ref string) (descriptor, error) {
	if ref == "" {
		if len(idx.Manifests) != 1 {
			return descriptor{}, fmt.Errorf("index.json has %d entries; choose one with -ref", len(idx.Manifests))
		}
		return idx.Manifests[0], nil
	}
	var found []descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[refNameKey] == ref {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return descriptor{}, fmt.Errorf("no index.json entry has ref name %q", ref)
	default:
		return descriptor{}, fmt.Errorf("%d index.json entries have ref name %q", len(found), ref)
	}
}

// resolveManifest follows image indexes down to one image manifest.
func resolveManifest(layout string, d descriptor, plat string) (descriptor, error) {
	for depth := 0; depth < 8; depth++ {
		switch d.MediaType {
		case mtManifest, mtDockerMan:
			return d, nil
		case mtIndex, mtDockerML:
		default:
			// The media type may be missing in a descriptor: look at the blob.
			var probe struct {
				MediaType string          `json:"mediaType"`
				Manifests json.RawMessage `json:"manifests"`
				Layers    json.RawMessage `json:"layers"`
			}
			if err := readBlobJSON(layout, d, &probe); err != nil {
				return d, err
			}
			if probe.Layers != nil {
				return d, nil
			}
			if probe.Manifests == nil {
				return d, fmt.Errorf("%s (media type %q) is neither an image manifest nor an index", d.Digest, d.MediaType)
			}
		}
		var idx index
		if err := readBlobJSON(layout, d, &idx); err != nil {
			return d, err
		}
		next, err := pickPlatform(idx, plat)
		if err != nil {
			return d, fmt.Errorf("index %s: %v", d.Digest, err)
		}
		d = next
	}
	return d, errors.New("image indexes nested too deep")
}

func pickPlatform(idx index, plat string) (descriptor, error) {
	if len(idx.Manifests) == 0 {
		return descriptor{}, errors.New("no manifests")
	}
	if plat == "" {
		if len(idx.Manifests) == 1 {
			return idx.Manifests[0], nil
		}
		plat = runtime.GOOS + "/" + runtime.GOARCH
	}
	parts := strings.Split(plat, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return descriptor{}, fmt.Errorf("bad platform %q, want os/arch[/variant]", plat)
	}
	var avail []string
	for _, m := range idx.Manifests {
		p := m.Platform
		if p == nil {
			avail = append(avail, "(none)")
			continue
		}
		avail = append(avail, strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/"))
		if p.OS == parts[0] && p.Architecture == parts[1] && (len(parts) == 2 || p.Variant == parts[2]) {
			return m, nil
		}
	}
	return descriptor{}, fmt.Errorf("no manifest for platform %s (have %s)", plat, strings.Join(avail, ", "))
}

func blobPath(layout, dgst string) (string, error) {
	alg, hexPart, ok := strings.Cut(dgst, ":")
	if !ok || alg == "" || hexPart == "" || strings.ContainsAny(hexPart, "/\\.") {
		return "", fmt.Errorf("bad digest %q", dgst)
	}
	return filepath.Join(layout, "blobs", alg, hexPart), nil
}

func readBlobJSON(layout string, d descriptor, v interface{}) error {
	p, err := blobPath(layout, d.Digest)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if d.Size > 0 && int64(len(b)) != d.Size {
		return fmt.Errorf("blob %s is %d bytes, its descriptor says %d", d.Digest, len(b), d.Size)
	}
	if strings.HasPrefix(d.Digest, "sha256:") {
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != d.Digest {
			return fmt.Errorf("blob %s does not match its digest", d.Digest)
		}
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("blob %s: %v", d.Digest, err)
	}
	return nil
}

func readJSONFile(p string, v interface{}) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func mustJSON(v interface{}) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// writeJSONBlob writes v (compact JSON) as a blob and returns its descriptor.
func writeJSONBlob(layout string, v interface{}, mediaType string) (descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	sum := sha256.Sum256(b)
	d := descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
	p, _ := blobPath(layout, d.Digest)
	return d, os.WriteFile(p, b, 0o644)
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// convertLayer builds the eStargz blob of one layer into layout dst.
func convertLayer(src, dst string, l descriptor, prio []string, chunkSize, level int) (descriptor, string, error) {
	p, err := blobPath(src, l.Digest)
	if err != nil {
		return descriptor{}, "", err
	}
	f, err := os.Open(p)
	if err != nil {
		return descriptor{}, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return descriptor{}, "", err
	}
	if fi.Size() != l.Size {
		return descriptor{}, "", fmt.Errorf("blob is %d bytes, its descriptor says %d", fi.Size(), l.Size)
	}

	build := func(prio []string, missed *[]string) (*estargz.Blob, error) {
		opts := []estargz.Option{estargz.WithCompressionLevel(level)}
		if chunkSize > 0 {
			opts = append(opts, estargz.WithChunkSize(chunkSize))
		}
		if len(prio) > 0 {
			opts = append(opts, estargz.WithPrioritizedFiles(prio), estargz.WithAllowPrioritizeNotFound(missed))
		}
		return estargz.Build(io.NewSectionReader(f, 0, fi.Size()), opts...)
	}
	var missed []string
	blob, err := build(prio, &missed)
	if err != nil {
		return descriptor{}, "", fmt.Errorf("estargz.Build: %v", err)
	}
	if len(prio) > 0 && len(missed) == len(prio) {
		// None of the prioritized files is in this layer: build it without
		// prioritized files, so that it gets ".no.prefetch.landmark" rather
		// than a ".prefetch.landmark" with nothing before it.
		_, derr := io.Copy(io.Discard, blob)
		blob.Close()
		if derr != nil {
			return descriptor{}, "", derr
		}
		if blob, err = build(nil, nil); err != nil {
			return descriptor{}, "", fmt.Errorf("estargz.Build: %v", err)
		}
	} else if len(missed) > 0 {
		logf("layer %s: prioritized files not in this layer: %s", l.Digest, strings.Join(missed, " "))
	}

	tmp, err := os.CreateTemp(filepath.Join(dst, "blobs", "sha256"), ".tmp-layer-")
	if err != nil {
		blob.Close()
		return descriptor{}, "", err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	ch := &countingHash{h: sha256.New()}
	_, cerr := io.Copy(io.MultiWriter(tmp, ch), blob)
	berr := blob.Close() // removes Build's temporary files
	if cerr == nil {
		cerr = berr
	}
	if err := tmp.Close(); cerr == nil {
		cerr = err
	}
	if cerr != nil {
		return descriptor{}, "", cerr
	}
	// DiffID is complete once the blob has been read to its end.
	diffID := blob.DiffID().String()
	dgst := "sha256:" + hex.EncodeToString(ch.h.Sum(nil))
	final, _ := blobPath(dst, dgst)
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return descriptor{}, "", err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return descriptor{}, "", err
	}
	uncompressed, err := uncompressedSize(final)
	if err != nil {
		return descriptor{}, "", fmt.Errorf("measuring %s: %v", dgst, err)
	}

	ann := map[string]string{}
	for k, v := range l.Annotations {
		// Drop annotations that describe the old blob's compression.
		if strings.HasPrefix(k, "containerd.io/snapshot/stargz/") ||
			strings.HasPrefix(k, "io.containers.estargz.") ||
			strings.HasPrefix(k, "io.containers.zstd-chunked.") ||
			strings.HasPrefix(k, "io.github.containers.zstd-chunked.") {
			continue
		}
		ann[k] = v
	}
	ann[estargz.TOCJSONDigestAnnotation] = blob.TOCDigest().String()
	ann[estargz.StoreUncompressedSizeAnnotation] = strconv.FormatInt(uncompressed, 10)
	return descriptor{MediaType: mtLayerGzip, Digest: dgst, Size: ch.n, Annotations: ann}, diffID, nil
}

// uncompressedSize is the size of the blob's decompressed tar (the same bytes
// the DiffID is computed over), read back through the estargz package's own
// gzip decompressor.
func uncompressedSize(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r, err := new(estargz.GzipDecompressor).Reader(f)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return io.Copy(io.Discard, r)
}
