package images

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
)

// TestWriteParallel checks that WriteParallel writes what Write writes,
// byte for byte, returns each file's checksum, leaves no temporary file,
// and refuses a message of the wrong type for its image, naming it.
func TestWriteParallel(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	ref := &Dir{Path: t.TempDir()}
	var imgs []Single
	for i := 1; i <= 50; i++ {
		imgs = append(imgs, Single{Name: fmt.Sprintf("core-%d.img", i), Msg: &criu_core.CoreEntry{
			Mtype:      criu_core.CoreEntry_X86_64.Enum(),
			ThreadCore: &criu_core.ThreadCoreEntry{FutexRla: proto.Uint64(uint64(i)), FutexRlaLen: proto.Uint32(24), Comm: proto.String("w")},
		}})
	}
	if err := d.WriteParallel(imgs); err != nil {
		t.Fatal(err)
	}
	sums := d.Sums()
	for _, im := range imgs {
		if err := ref.Write(im.Name, im.Msg); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(d.Path, im.Name))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(ref.Path, im.Name))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from Write's", im.Name)
		}
		if s, got := checksum.Of(want), sums[im.Name]; got == nil || got.Size != s.Size || fmt.Sprint(got.CRC) != fmt.Sprint(s.CRC) {
			t.Fatalf("%s: sum %+v, want %+v", im.Name, got, s)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(d.Path, "*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	bad := append(imgs[:1:1], Single{Name: "core-99.img", Msg: &pstree.PstreeEntry{Pid: proto.Uint32(1)}})
	if err := d.WriteParallel(bad); err == nil || !bytes.Contains([]byte(err.Error()), []byte("core-99.img")) {
		t.Fatalf("a pstree entry as a core image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, "core-99.img")); !os.IsNotExist(err) {
		t.Fatalf("core-99.img exists after a failed write: %v", err)
	}
}
