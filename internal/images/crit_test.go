package images

import (
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// critLacks lists magics Debian's crit (criu 3.17) cannot decode: PIDFD is
// newer than its magic table, SIGNAL and BINFMT_MISC have no handler;
// STASIS_MQUEUE is stasis' own.
var critLacks = map[string]bool{"PIDFD": true, "SIGNAL": true, "BINFMT_MISC": true, "STASIS_MQUEUE": true}

type critImage struct {
	Magic   string           `json:"magic"`
	Entries []map[string]any `json:"entries"`
}

func critDecode(t *testing.T, path string) critImage {
	t.Helper()
	out, err := exec.Command("crit", "decode", "-i", path).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("crit decode -i %s: %v\n%s", path, err, msg)
	}
	var ci critImage
	if err := json.Unmarshal(out, &ci); err != nil {
		t.Fatalf("crit decode -i %s: output is not JSON: %v", path, err)
	}
	return ci
}

func critBytes(t *testing.T, v any) []byte {
	t.Helper()
	s, _ := v.(string)
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(s, "\n", ""))
	if err != nil {
		t.Fatalf("crit extra %q: %v", s, err)
	}
	return b
}

// TestCritDecodes checks the images we write against an independent
// decoder: every kind, every field set, extra data included.
func TestCritDecodes(t *testing.T) {
	require.Tool(t, "crit")
	d := &Dir{Path: t.TempDir()}

	// A few realistic images, checked field by field.
	if err := d.Write("inventory.img", &inventory.InventoryEntry{
		ImgVersion: proto.Uint32(2), FdinfoPerId: proto.Bool(true), NsPerId: proto.Bool(true),
		RootIds: &criu_core.TaskKobjIdsEntry{VmId: proto.Uint32(1), FilesId: proto.Uint32(2), FsId: proto.Uint32(3), SighandId: proto.Uint32(4)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Write("pstree.img",
		&pstree.PstreeEntry{Pid: proto.Uint32(42), Ppid: proto.Uint32(0), Pgid: proto.Uint32(42), Sid: proto.Uint32(1), Threads: []uint32{42, 43}},
		&pstree.PstreeEntry{Pid: proto.Uint32(44), Ppid: proto.Uint32(42), Pgid: proto.Uint32(42), Sid: proto.Uint32(1), Threads: []uint32{44}},
	); err != nil {
		t.Fatal(err)
	}
	w, err := d.NewWriter("pipes-data.img")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(&pipe_data.PipeDataEntry{PipeId: proto.Uint32(7), Bytes: proto.Uint32(11)})
	w.WriteExtra([]byte("hello pipe\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	inv := critDecode(t, d.Path+"/inventory.img")
	if inv.Magic != "INVENTORY" || len(inv.Entries) != 1 || inv.Entries[0]["img_version"] != 2.0 ||
		inv.Entries[0]["root_ids"].(map[string]any)["files_id"] != 2.0 {
		t.Errorf("crit inventory: %+v", inv)
	}
	ps := critDecode(t, d.Path+"/pstree.img")
	if ps.Magic != "PSTREE" || len(ps.Entries) != 2 || ps.Entries[1]["pid"] != 44.0 || len(ps.Entries[0]["threads"].([]any)) != 2 {
		t.Errorf("crit pstree: %+v", ps)
	}
	pd := critDecode(t, d.Path+"/pipes-data.img")
	if pd.Magic != "PIPES_DATA" || len(pd.Entries) != 1 || string(critBytes(t, pd.Entries[0]["extra"])) != "hello pipe\n" {
		t.Errorf("crit pipes-data: %+v", pd)
	}

	// Every kind crit knows, all fields set: crit must parse each entry
	// (its protobuf parser checks required fields) and see all of them.
	for _, k := range entryKinds() {
		if critLacks[k.magic] {
			continue
		}
		name := nameOf(k)
		want := sample(t, k, 1)
		w, err := d.NewWriter(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range want.Entries {
			w.Write(m)
			if want.Extra != nil && len(want.Extra[i]) > 0 {
				w.WriteExtra(want.Extra[i])
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ci := critDecode(t, d.Path+"/"+name)
		if ci.Magic != k.magic || len(ci.Entries) != len(want.Entries) {
			t.Errorf("%s: crit sees %s with %d entries, want %s with %d", name, ci.Magic, len(ci.Entries), k.magic, len(want.Entries))
		}
		switch k.magic {
		case "PIPES_DATA", "FIFO_DATA", "SK_QUEUES", "GHOST_FILE":
			for i, e := range ci.Entries {
				if x, ok := e["extra"]; ok && string(critBytes(t, x)) != string(want.Extra[i]) {
					t.Errorf("%s: crit extra %d = %q, want %q", name, i, critBytes(t, x), want.Extra[i])
				}
			}
		}
	}
}
