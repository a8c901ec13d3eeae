package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	ipc_sem "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-sem"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// onlyReader hides Len/Stat so that the decoder cannot know the length.
type onlyReader struct{ io.Reader }

func encodeImage(t testing.TB, name string, img *Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, name, img); err != nil {
		t.Fatalf("encode %s: %v", name, err)
	}
	return b.Bytes()
}

func sameImage(t testing.TB, what string, got, want *Image) {
	t.Helper()
	if got.Magic != want.Magic {
		t.Fatalf("%s: magic %q, want %q", what, got.Magic, want.Magic)
	}
	if len(got.Entries) != len(want.Entries) {
		t.Fatalf("%s: %d entries, want %d", what, len(got.Entries), len(want.Entries))
	}
	for i := range want.Entries {
		if !proto.Equal(got.Entries[i], want.Entries[i]) {
			t.Fatalf("%s: entry %d differs:\n got %v\nwant %v", what, i, got.Entries[i], want.Entries[i])
		}
	}
	if (got.Extra == nil) != (want.Extra == nil) {
		t.Fatalf("%s: extra %v, want %v", what, got.Extra, want.Extra)
	}
	for i := range want.Extra {
		if !bytes.Equal(got.Extra[i], want.Extra[i]) {
			t.Fatalf("%s: extra %d = %q, want %q", what, i, got.Extra[i], want.Extra[i])
		}
	}
}

func TestNames(t *testing.T) {
	for name, want := range map[string]string{
		"inventory.img":       "INVENTORY",
		"core-12.img":         "CORE",
		"/a/b/mm-1.img":       "MM",
		"pagemap-7.img":       "PAGEMAP",
		"pagemap-shmem-9.img": "PAGEMAP",
		"pages-1.img":         "PAGES",
		"ghost-file-1a.img":   "GHOST_FILE",
		"tcp-stream-3f2e.img": "TCP_STREAM",
		"netns-5.img":         "NETNS",
		"netns-ct-5.img":      "RAW",
		"tmpfs-dev-3.tar.gz":  "RAW",
		"ipcns-var-4.img":     "IPC_VAR",
		"stats-dump":          "STATS",
		"stats-restore":       "STATS",
		"tty-info.img":        "TTY_INFO",
		"tty.img":             "TTY_FILES",
		"fdinfo-2.img":        "FDINFO",
		"signal-p-3.img":      "SIGNAL",
		"binfmt-misc-2.img":   "BINFMT_MISC",
		"mountpoints-11.img":  "MNTS",
		"pidfd.img":           "PIDFD",
	} {
		got, err := Magic(name)
		if err != nil || got != want {
			t.Errorf("Magic(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"core.img", "core-.img", "core-x.img", "ghost-file-1G.img", "descriptors.json", "stats-dump.img", "pages-1.img.tmp"} {
		if m, err := Magic(name); err == nil {
			t.Errorf("Magic(%q) = %q, want error", name, m)
		}
	}
	if !IsRaw("pages-3.img") || IsRaw("pagemap-3.img") || IsRaw("nonsense") {
		t.Error("IsRaw wrong")
	}
}

// TestMagicTableCovered: every image magic go-criu knows has a kind, so
// show decodes whatever criu writes.
func TestMagicTableCovered(t *testing.T) {
	notImages := map[string]bool{"IMG_COMMON": true, "IMG_SERVICE": true, "CRTOOLS_IMAGES_V1_1": true, "KDAT": true}
	for name, v := range magic.LoadMagic().ByName {
		if notImages[name] {
			continue
		}
		if k := byMagic[uint32(v)]; k == nil || k.magic != name {
			t.Errorf("magic %s (%#x) has no image kind", name, v)
		}
	}
}

func TestRoundTripEveryKind(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	for _, k := range entryKinds() {
		variants := 1
		if k.magic == "GHOST_FILE" {
			variants = 2
		}
		for v := 0; v < variants; v++ {
			name := nameOf(k)
			want := sample(t, k, v)

			// In memory, with and without a known length.
			b := encodeImage(t, name, want)
			got, err := Decode(bytes.NewReader(b), name)
			if err != nil {
				t.Fatalf("%s: decode: %v", name, err)
			}
			sameImage(t, name, got, want)
			got, err = Decode(onlyReader{bytes.NewReader(b)}, "unnamed")
			if err != nil {
				t.Fatalf("%s: decode stream: %v", name, err)
			}
			sameImage(t, name+" (stream)", got, want)

			// Through the directory: Writer + Reader.
			w, err := d.NewWriter(name)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range want.Entries {
				if err := w.Write(m); err != nil {
					t.Fatalf("%s: write: %v", name, err)
				}
				if want.Extra != nil && len(want.Extra[i]) > 0 {
					x := want.Extra[i]
					if err := w.WriteExtra(x[:1]); err != nil {
						t.Fatalf("%s: write extra: %v", name, err)
					}
					if err := w.WriteExtra(x[1:]); err != nil {
						t.Fatalf("%s: write extra: %v", name, err)
					}
				}
			}
			if err := w.Close(); err != nil {
				t.Fatalf("%s: close: %v", name, err)
			}
			onDisk, err := os.ReadFile(filepath.Join(d.Path, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, b) {
				t.Fatalf("%s: Writer and Encode disagree", name)
			}
			if d.Has(name + ".tmp") {
				t.Fatalf("%s: temporary file left behind", name)
			}
			r, err := d.NewReader(name)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want.Entries {
				m := k.newMsg(i)
				if err := r.Next(m); err != nil {
					t.Fatalf("%s: next %d: %v", name, i, err)
				}
				if !proto.Equal(m, want.Entries[i]) {
					t.Fatalf("%s: entry %d differs", name, i)
				}
				if want.Extra != nil && i%2 == 0 { // odd entries: let Next skip it
					x, err := r.ReadExtra()
					if err != nil || !bytes.Equal(x, want.Extra[i]) {
						t.Fatalf("%s: extra %d = %q, %v; want %q", name, i, x, err, want.Extra[i])
					}
				}
			}
			if err := r.Next(k.newMsg(len(want.Entries))); err != io.EOF {
				t.Fatalf("%s: after last entry: %v, want io.EOF", name, err)
			}
			if r.Offset() != int64(len(b)) {
				t.Fatalf("%s: offset %d at EOF, want %d", name, r.Offset(), len(b))
			}
			r.Close()

			if k.single {
				m := k.newMsg(0)
				if err := d.ReadOne(name, m); err != nil || !proto.Equal(m, want.Entries[0]) {
					t.Fatalf("%s: ReadOne: %v", name, err)
				}
			}
		}
	}
}

func TestReadAllAndDirWrite(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	want := []*pstree.PstreeEntry{
		{Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{1, 2}},
		{Pid: proto.Uint32(5), Ppid: proto.Uint32(1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{5}},
	}
	if err := d.Write("pstree.img", want[0], want[1]); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAll(d, "pstree.img", func() *pstree.PstreeEntry { return new(pstree.PstreeEntry) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !proto.Equal(got[0], want[0]) || !proto.Equal(got[1], want[1]) {
		t.Fatalf("ReadAll = %v", got)
	}
	// ReadOne insists on exactly one entry.
	var one pstree.PstreeEntry
	if err := d.ReadOne("pstree.img", &one); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadOne of two entries: %v, want ErrCorrupt", err)
	}
	if err := d.Write("pstree.img"); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadOne("pstree.img", &one); !errors.Is(err, ErrTruncated) {
		t.Fatalf("ReadOne of no entries: %v, want ErrTruncated", err)
	}
	// Reading into the wrong type is refused, not silently misdecoded.
	if _, err := ReadAll(d, "pstree.img", func() *mm.MmEntry { return new(mm.MmEntry) }); err == nil {
		t.Fatal("ReadAll into the wrong type succeeded")
	}
}

func TestErrorFormat(t *testing.T) {
	core := sample(t, lookup("core-12.img"), 0)
	b := encodeImage(t, "core-12.img", core)
	size := binary.LittleEndian.Uint32(b[8:])
	cut := b[:8+4+12]
	_, err := Decode(bytes.NewReader(cut), "core-12.img")
	want := "image core-12.img at offset 8: truncated entry: want " + strconv.FormatUint(uint64(size), 10) + " bytes, have 12"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	var ie *Error
	if !errors.As(err, &ie) || ie.File != "core-12.img" || ie.Offset != 8 || !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %#v", err)
	}
}

func TestBadMagic(t *testing.T) {
	coreImg := encodeImage(t, "core-1.img", sample(t, lookup("core-1.img"), 0))
	invImg := encodeImage(t, "inventory.img", sample(t, lookup("inventory.img"), 0))
	statsImg := encodeImage(t, "stats-dump", sample(t, lookup("stats-dump"), 0))
	for _, tc := range []struct {
		name string
		data []byte
		off  int64
	}{
		{"mm-1.img", coreImg, 4},         // right header, wrong type
		{"core-1.img", invImg, 0},        // inventory where core expected
		{"inventory.img", coreImg, 0},    // core where inventory expected
		{"core-1.img", statsImg, 0},      // service header
		{"x.img", []byte("garbage!"), 0}, // unknown first word
		{"x.img", append(binary.LittleEndian.AppendUint32(nil, imgCommonMagic), 1, 2, 3, 4), 4},
		{"x.img", append(binary.LittleEndian.AppendUint32(nil, imgServiceMagic), coreImg[4:]...), 4},
		{"x.img", append(binary.LittleEndian.AppendUint32(nil, imgCommonMagic), invImg[:4]...), 4},
	} {
		_, err := Decode(bytes.NewReader(tc.data), tc.name)
		var ie *Error
		if !errors.Is(err, ErrBadMagic) || !errors.As(err, &ie) || ie.Offset != tc.off {
			t.Errorf("%s: %v, want ErrBadMagic at offset %d", tc.name, err, tc.off)
		}
	}
	// Unknown names decode by magic.
	img, err := Decode(bytes.NewReader(coreImg), "renamed")
	if err != nil || img.Magic != "CORE" {
		t.Fatalf("decode by magic: %v", err)
	}
	// Through a Dir too.
	d := &Dir{Path: t.TempDir()}
	os.WriteFile(filepath.Join(d.Path, "mm-1.img"), coreImg, 0o600)
	var m mm.MmEntry
	if err := d.ReadOne("mm-1.img", &m); !errors.Is(err, ErrBadMagic) || !strings.Contains(err.Error(), filepath.Join(d.Path, "mm-1.img")) {
		t.Fatalf("ReadOne: %v", err)
	}
}

// checkCut decodes every prefix of b: each must fail with ErrTruncated
// or ErrCorrupt, or (multi-entry images, cut at an entry boundary) yield
// exactly a prefix of the entries.
func checkCut(t *testing.T, name string, b []byte, want *Image) {
	t.Helper()
	for cut := 0; cut < len(b); cut++ {
		for _, r := range []io.Reader{bytes.NewReader(b[:cut]), onlyReader{bytes.NewReader(b[:cut])}} {
			img, err := Decode(r, name)
			if err != nil {
				if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s cut at %d: %v, want ErrTruncated/ErrCorrupt", name, cut, err)
				}
				var ie *Error
				if !errors.As(err, &ie) || ie.Offset > int64(cut) {
					t.Fatalf("%s cut at %d: error %v has no sane offset", name, cut, err)
				}
				continue
			}
			if len(img.Entries) == 1 && want.Magic == "GHOST_FILE" && len(want.Entries) == 1 {
				// Unchunked ghost content runs to EOF and carries no
				// length (files-reg.c): a cut there is undetectable.
				sameImage(t, name, &Image{Magic: img.Magic, Entries: img.Entries}, &Image{Magic: want.Magic, Entries: want.Entries})
				if !bytes.HasPrefix(want.Extra[0], img.Extra[0]) {
					t.Fatalf("%s cut at %d: content %q", name, cut, img.Extra[0])
				}
				continue
			}
			if len(img.Entries) >= len(want.Entries) {
				t.Fatalf("%s cut at %d: decoded all %d entries from a truncated file", name, cut, len(img.Entries))
			}
			prefix := &Image{Magic: want.Magic, Entries: want.Entries[:len(img.Entries)]}
			if want.Extra != nil {
				prefix.Extra = want.Extra[:len(img.Entries)]
			}
			sameImage(t, name, img, prefix)
			if enc := encodeImage(t, name, img); len(enc) != cut {
				t.Fatalf("%s cut at %d: success not at an entry boundary", name, cut)
			}
		}
	}
}

func TestTruncationEveryOffset(t *testing.T) {
	for _, name := range []string{"core-1.img", "inventory.img", "pagemap-1.img", "pipes-data.img",
		"tcp-stream-1f.img", "ghost-file-2.img", "ipcns-msg-1.img", "stats-dump", "fdinfo-2.img"} {
		k := lookup(name)
		for v := 0; v < 2; v++ {
			want := sample(t, k, v)
			checkCut(t, name, encodeImage(t, name, want), want)
		}
	}
	// And through Dir: ReadOne / ReadAll of a truncated file.
	d := &Dir{Path: t.TempDir()}
	b := encodeImage(t, "core-1.img", sample(t, lookup("core-1.img"), 0))
	for cut := 0; cut < len(b); cut += 7 {
		os.WriteFile(filepath.Join(d.Path, "core-1.img"), b[:cut], 0o600)
		var c criu_core.CoreEntry
		if err := d.ReadOne("core-1.img", &c); !errors.Is(err, ErrTruncated) {
			t.Fatalf("ReadOne cut at %d: %v", cut, err)
		}
	}
}

func TestFlippedBytes(t *testing.T) {
	for _, name := range []string{"core-1.img", "pagemap-1.img", "pipes-data.img", "ghost-file-2.img", "ipcns-msg-1.img", "files.img"} {
		b := encodeImage(t, name, sample(t, lookup(name), 1))
		for i := range b {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[i] ^= x
				// Any outcome but a panic; an error must be one of ours.
				for _, r := range []io.Reader{bytes.NewReader(c), onlyReader{bytes.NewReader(c)}} {
					if _, err := Decode(r, name); err != nil {
						var ie *Error
						if !errors.As(err, &ie) {
							t.Fatalf("%s byte %d ^%#x: error %v is not an *Error", name, i, x, err)
						}
					}
				}
			}
		}
	}
}

func TestEntryBounds(t *testing.T) {
	hdr := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, imgCommonMagic), lookup("core-1.img").value)
	huge := binary.LittleEndian.AppendUint32(bytes.Clone(hdr), 0xffffffff)
	if _, err := Decode(bytes.NewReader(huge), "core-1.img"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("4 GiB entry: %v, want ErrCorrupt", err)
	}
	big := binary.LittleEndian.AppendUint32(bytes.Clone(hdr), MaxEntrySize-1)
	big = append(big, 1, 2, 3)
	if _, err := Decode(bytes.NewReader(big), "core-1.img"); !errors.Is(err, ErrTruncated) {
		t.Fatalf("64 MiB entry in 15 bytes: %v, want ErrTruncated", err)
	}
	// A stream of unknown length must not make us allocate what it claims.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Decode(onlyReader{bytes.NewReader(big)}, "core-1.img")
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("stream: %v, want ErrTruncated", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Fatalf("decoding 15 bytes allocated %d bytes", n)
	}
	// Extra data claiming more than the file holds.
	pd := &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(1 << 31)}
	var b bytes.Buffer
	e := newEncoder(&b, "pipes-data.img", lookup("pipes-data.img"))
	e.header()
	e.entry(pd)
	e.w.Flush()
	for _, r := range []io.Reader{bytes.NewReader(b.Bytes()), onlyReader{bytes.NewReader(b.Bytes())}} {
		if _, err := Decode(r, "pipes-data.img"); !errors.Is(err, ErrTruncated) {
			t.Fatalf("2 GiB of pipe data in a tiny file: %v", err)
		}
	}
}

func TestWriterChecks(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	noTmp := func(name string) {
		t.Helper()
		if d.Has(name) || d.Has(name+".tmp") {
			t.Fatalf("%s: failed write left a file", name)
		}
	}
	// Missing proto2 required field: error names the file.
	err := d.Write("pstree.img", &pstree.PstreeEntry{Ppid: proto.Uint32(1)})
	if err == nil || !strings.Contains(err.Error(), "pstree.img") || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing required field: %v", err)
	}
	noTmp("pstree.img")
	// Wrong message type.
	if err := d.Write("core-1.img", &mm.MmEntry{}); err == nil {
		t.Fatal("wrote an mm entry into core-1.img")
	}
	noTmp("core-1.img")
	// Single-entry image.
	inv := &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}
	if err := d.Write("inventory.img", inv, inv); err == nil {
		t.Fatal("wrote two inventory entries")
	}
	if err := d.Write("inventory.img"); err == nil {
		t.Fatal("wrote an empty inventory")
	}
	noTmp("inventory.img")
	// Pagemap must start with its head.
	if err := d.Write("pagemap-1.img", &pagemap.PagemapEntry{Vaddr: proto.Uint64(0), CompatNrPages: proto.Uint32(0)}); err == nil {
		t.Fatal("pagemap without head")
	}
	// Extra data must match what the entry announces.
	pd := &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(4)}
	if err := d.Write("pipes-data.img", pd); err == nil {
		t.Fatal("pipe data entry without its data")
	}
	w, _ := d.NewWriter("pipes-data.img")
	w.Write(pd)
	if err := w.WriteExtra([]byte("12345")); err == nil {
		t.Fatal("5 bytes of extra for a 4-byte entry")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write succeeded")
	}
	noTmp("pipes-data.img")
	w, _ = d.NewWriter("fdinfo-2.img")
	if err := w.WriteExtra([]byte("x")); err == nil {
		t.Fatal("extra data in fdinfo")
	}
	w.Abort()
	noTmp("fdinfo-2.img")
	// Abort discards a good image.
	w, _ = d.NewWriter("fdinfo-2.img")
	w.Write(&fdinfo.FdinfoEntry{Id: proto.Uint32(1), Flags: proto.Uint32(0), Type: fdinfo.FdTypes_REG.Enum(), Fd: proto.Uint32(0)})
	w.Abort()
	noTmp("fdinfo-2.img")
	// Bad names.
	for _, name := range []string{"../core-1.img", "sub/core-1.img", "", "pages-1.img", "whatever.img"} {
		if err := d.Write(name); err == nil {
			t.Fatalf("Write(%q) succeeded", name)
		}
	}
	if _, err := d.CreateRaw("core-1.img"); err == nil {
		t.Fatal("CreateRaw of a non-raw image")
	}
	f, err := d.CreateRaw("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096))
	f.Close()
	f, err = d.OpenRaw("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := d.NewReader("pages-1.img"); err == nil {
		t.Fatal("NewReader of a raw image")
	}
}

func TestCreateAndOpen(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "a", "b")
	d, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("created dir: %v %v", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(p); len(ents) != 0 {
		t.Fatalf("Create left %v", ents)
	}
	// A foreign file does not make a dump.
	os.WriteFile(filepath.Join(p, "descriptors.json"), []byte("[]"), 0o600)
	if _, err := Create(p); err != nil {
		t.Fatalf("Create with a foreign file: %v", err)
	}
	if err := d.Write("inventory.img", &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	// A new dump replaces the previous one (criu overwrites it): its
	// images go, foreign files stay.
	if _, err := Create(p); err != nil {
		t.Fatalf("Create on a dump: %v", err)
	}
	if _, err := os.Stat(filepath.Join(p, "inventory.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Create on a dump left inventory.img: %v", err)
	}
	if _, err := os.Stat(filepath.Join(p, "descriptors.json")); err != nil {
		t.Fatalf("Create on a dump removed a foreign file: %v", err)
	}
	if _, err := Open(p); err != nil {
		t.Fatal(err)
	}

	// Not writable: a file where the directory should be, a path under a
	// file, a /proc directory (root ignores mode bits, /proc does not).
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	for _, bad := range []string{file, filepath.Join(file, "sub"), "/proc/self", "/proc/1/fdinfo"} {
		if _, err := Create(bad); !errors.Is(err, ErrNotWritable) || !strings.Contains(err.Error(), bad) {
			t.Errorf("Create(%s): %v, want ErrNotWritable naming it", bad, err)
		}
	}
	if _, err := Open(file); err == nil {
		t.Error("Open of a file succeeded")
	}
	if _, err := Open(filepath.Join(base, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing dir: %v", err)
	}
}

// TestCreateReadOnlyMount uses a read-only tmpfs: the case (read-only
// bind mounts, ro container rootfs) where permission bits lie to root.
func TestCreateReadOnlyMount(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		require.SkipOrFail(t, "cannot mount a read-only tmpfs here (needs root): %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	if _, err := Create(dir); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("Create on a read-only mount: %v", err)
	}
}

func TestExtraHelpers(t *testing.T) {
	img := sample(t, lookup("ipcns-msg-1.img"), 0)
	msgs, err := IPCMessages(img.Entries[0].(*ipc_msg.IpcMsgEntry), img.Extra[0])
	if err != nil || len(msgs) != 2 || string(msgs[1].Text) != "two three" || msgs[1].Msg.GetMtype() != 2 {
		t.Fatalf("IPCMessages = %v, %v", msgs, err)
	}
	if _, err := IPCMessages(img.Entries[0].(*ipc_msg.IpcMsgEntry), img.Extra[0][:len(img.Extra[0])-1]); err == nil {
		t.Fatal("IPCMessages of short data succeeded")
	}
	img = sample(t, lookup("ipcns-sem-1.img"), 0)
	v, err := SemValues(img.Entries[0].(*ipc_sem.IpcSemEntry), img.Extra[0])
	if err != nil || len(v) != 3 || v[2] != 3 {
		t.Fatalf("SemValues = %v, %v", v, err)
	}
	img = sample(t, lookup("tcp-stream-1.img"), 0)
	in, out, err := TCPQueues(img.Entries[0].(*tcp_stream.TcpStreamEntry), img.Extra[0])
	if err != nil || string(in) != "in" || string(out) != "OUT" {
		t.Fatalf("TCPQueues = %q %q %v", in, out, err)
	}
}

// TestRemoveWritten: a Dir removes what it wrote, images, raw images and
// tracked names, and nothing that was there before; Create says whether
// it made the directory.
func TestRemoveWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "imgs")
	d, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Created {
		t.Error("Create of a missing dir: Created is false")
	}
	if err := os.WriteFile(filepath.Join(path, "descriptors.json"), []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Write("pstree.img", &pstree.PstreeEntry{Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1)}); err != nil {
		t.Fatal(err)
	}
	f, err := d.CreateRaw("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(path, "extra.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Track("extra.json", "never-written")
	n, err := d.RemoveWritten()
	if err != nil || n != 3 {
		t.Errorf("RemoveWritten = %d, %v; want 3, nil", n, err)
	}
	ents, _ := os.ReadDir(path)
	if len(ents) != 1 || ents[0].Name() != "descriptors.json" {
		t.Errorf("left %v, want only descriptors.json", ents)
	}
	again, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created {
		t.Error("Create of an existing dir: Created is true")
	}
}
