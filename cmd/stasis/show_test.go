package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// runShow runs `stasis show args...` in process through the root command,
// which also checks that show is registered.
func runShow(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot(nil)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"show"}, args...))
	err := root.Execute()
	return out.String(), err
}

type shown struct {
	Magic   string           `json:"magic"`
	Entries []map[string]any `json:"entries"`
	Size    int64            `json:"size"`
	Pages   int64            `json:"pages"`
}

func showJSON(t *testing.T, args ...string) shown {
	t.Helper()
	out, err := runShow(t, args...)
	if err != nil {
		t.Fatalf("show %v: %v", args, err)
	}
	var s shown
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("show %v: not JSON: %v\n%s", args, err, out)
	}
	return s
}

func TestShow(t *testing.T) {
	d := &images.Dir{Path: t.TempDir()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Write("inventory.img", &inventory.InventoryEntry{
		ImgVersion: proto.Uint32(2), FdinfoPerId: proto.Bool(true),
		RootIds: &criu_core.TaskKobjIdsEntry{VmId: proto.Uint32(1), FilesId: proto.Uint32(2), FsId: proto.Uint32(3), SighandId: proto.Uint32(4)},
	}))
	must(d.Write("pagemap-7.img",
		&pagemap.PagemapHead{PagesId: proto.Uint32(1)},
		&pagemap.PagemapEntry{Vaddr: proto.Uint64(0x400000), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(2), Flags: proto.Uint32(4)},
	))
	w, err := d.NewWriter("pipes-data.img")
	must(err)
	must(w.Write(&pipe_data.PipeDataEntry{PipeId: proto.Uint32(9), Bytes: proto.Uint32(5)}))
	must(w.WriteExtra([]byte("hello")))
	must(w.Close())
	w, err = d.NewWriter("tcp-stream-1f.img")
	must(err)
	must(w.Write(&tcp_stream.TcpStreamEntry{InqLen: proto.Uint32(2), InqSeq: proto.Uint32(1), OutqLen: proto.Uint32(3),
		OutqSeq: proto.Uint32(1), OptMask: proto.Uint32(0), SndWscale: proto.Uint32(7), MssClamp: proto.Uint32(1460)}))
	must(w.WriteExtra([]byte("inOUT")))
	must(w.Close())

	inv := showJSON(t, filepath.Join(d.Path, "inventory.img"))
	if inv.Magic != "INVENTORY" || len(inv.Entries) != 1 || inv.Entries[0]["img_version"] != 2.0 ||
		inv.Entries[0]["fdinfo_per_id"] != true || inv.Entries[0]["root_ids"].(map[string]any)["files_id"] != 2.0 {
		t.Errorf("inventory: %+v", inv)
	}

	pm := showJSON(t, filepath.Join(d.Path, "pagemap-7.img"))
	// As crit shows it: the address in hex, the flags by name.
	if pm.Magic != "PAGEMAP" || len(pm.Entries) != 2 || pm.Entries[0]["pages_id"] != 1.0 || pm.Entries[1]["nr_pages"] != 2.0 ||
		pm.Entries[1]["vaddr"] != "0x400000" || pm.Entries[1]["flags"] != "PE_PRESENT" {
		t.Errorf("pagemap: %+v", pm)
	}

	pd := showJSON(t, filepath.Join(d.Path, "pipes-data.img"))
	if pd.Magic != "PIPES_DATA" || pd.Entries[0]["extra"] != "aGVsbG8=\n" || pd.Entries[0]["pipe_id"] != 9.0 {
		t.Errorf("pipes-data: %+v", pd)
	}
	pd = showJSON(t, "--nopl", filepath.Join(d.Path, "pipes-data.img"))
	if pd.Entries[0]["extra"] != "... <5 bytes>" {
		t.Errorf("pipes-data --nopl: %+v", pd)
	}

	tcp := showJSON(t, filepath.Join(d.Path, "tcp-stream-1f.img"))
	if x, _ := tcp.Entries[0]["extra"].(map[string]any); x["inq"] != "aW4=\n" || x["outq"] != "T1VU\n" {
		t.Errorf("tcp-stream: %+v", tcp)
	}

	// Pretty by default, one line on request.
	out, _ := runShow(t, filepath.Join(d.Path, "inventory.img"))
	if !strings.Contains(out, "\n    \"entries\"") {
		t.Errorf("default output is not indented:\n%s", out)
	}
	out, _ = runShow(t, "--pretty=false", filepath.Join(d.Path, "inventory.img"))
	if strings.Count(out, "\n") != 1 {
		t.Errorf("--pretty=false output spans lines:\n%s", out)
	}

	// Raw pages image.
	f, err := d.CreateRaw("pages-1.img")
	must(err)
	f.Write(make([]byte, 3*os.Getpagesize()))
	f.Close()
	pg := showJSON(t, filepath.Join(d.Path, "pages-1.img"))
	if pg.Magic != "PAGES" || pg.Size != int64(3*os.Getpagesize()) || pg.Pages != 3 {
		t.Errorf("pages: %+v", pg)
	}
}

func TestShowErrors(t *testing.T) {
	dir := t.TempDir()
	// A truncated core image: the error names the file and the offset.
	d := &images.Dir{Path: dir}
	if err := d.Write("pagemap-1.img", &pagemap.PagemapHead{PagesId: proto.Uint32(1)},
		&pagemap.PagemapEntry{Vaddr: proto.Uint64(0x1000), CompatNrPages: proto.Uint32(0)}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pagemap-1.img")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-2], 0o600)
	_, err := runShow(t, p)
	var ie *images.Error
	if !errors.As(err, &ie) || !errors.Is(err, images.ErrTruncated) || !strings.Contains(err.Error(), p+" at offset ") {
		t.Fatalf("truncated image: %v", err)
	}

	bad := filepath.Join(dir, "core-1.img")
	os.WriteFile(bad, []byte("not an image at all"), 0o600)
	if _, err := runShow(t, bad); !errors.Is(err, images.ErrBadMagic) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("garbage: %v", err)
	}

	odd := filepath.Join(dir, "pages-2.img")
	os.WriteFile(odd, make([]byte, 100), 0o600)
	if _, err := runShow(t, odd); err == nil || !strings.Contains(err.Error(), odd) {
		t.Fatalf("partial page: %v", err)
	}

	if _, err := runShow(t, filepath.Join(dir, "missing.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := runShow(t); err == nil {
		t.Fatal("show without a file succeeded")
	}
}
