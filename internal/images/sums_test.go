package images

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
)

// TestSumsAsWritten: the sums a Dir takes while writing are the ones the
// manifest would read back from the files.
func TestSumsAsWritten(t *testing.T) {
	d, err := Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write("fs-1.img", &fs.FsEntry{CwdId: proto.Uint32(1), RootId: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	manifest := func(known map[string]*checksum.Sum) checksum.Manifest {
		if err := checksum.Write(d.Path, known); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(d.Path, checksum.FileName))
		if err != nil {
			t.Fatal(err)
		}
		var m checksum.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if d.Sums()["fs-1.img"] == nil {
		t.Fatal("no sum taken for fs-1.img")
	}
	if read, taken := manifest(nil), manifest(d.Sums()); !reflect.DeepEqual(read, taken) {
		t.Fatalf("read back %+v, taken while writing %+v", read.Files["fs-1.img"], taken.Files["fs-1.img"])
	}
	if err := checksum.Verify(d.Path); err != nil {
		t.Fatal(err)
	}
}
