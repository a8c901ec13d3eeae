package files

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

func selfPipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// TestPipeDataRoundTrip: the buffer of a pipe is copied without being
// consumed, written to pipes-data.img, read back, and refilled into a new
// pipe with its capacity.
func TestPipeDataRoundTrip(t *testing.T) {
	r, w := selfPipe(t)
	if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, 128<<10); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 6000) // 96000 bytes
	for off := 0; off < len(want); off += 1000 {
		if _, err := unix.Write(w, want[off:off+1000]); err != nil {
			t.Fatal(err)
		}
	}
	fd := &Fd{Pid: os.Getpid(), Num: r, Target: "pipe:[test]"}
	d, err := readPipeData(fd)
	if err != nil {
		t.Fatal(err)
	}
	if d.size != 128<<10 || !bytes.Equal(d.bytes, want) {
		t.Fatalf("copied size %d, %d bytes; want %d, %d", d.size, len(d.bytes), 128<<10, len(want))
	}
	if n, _ := unix.IoctlGetInt(r, unix.TIOCINQ); n != len(want) {
		t.Fatalf("the copy consumed the pipe: %d bytes left of %d", n, len(want))
	}

	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bufs := &pipeBuffers{order: []uint64{7, 9}, data: map[uint64]*pipeData{7: d, 9: {size: 4096}}}
	if err := bufs.write(dir, "pipes-data.img"); err != nil {
		t.Fatal(err)
	}
	back, err := readPipeDataImage(dir, "pipes-data.img")
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !bytes.Equal(back[7].bytes, want) || back[9].size != 4096 || len(back[9].bytes) != 0 {
		t.Fatalf("read back %+v", back)
	}
	r2, w2 := selfPipe(t)
	if err := back[7].fill(w2); err != nil {
		t.Fatal(err)
	}
	if sz, _ := unix.FcntlInt(uintptr(r2), unix.F_GETPIPE_SZ, 0); sz != 128<<10 {
		t.Errorf("refilled pipe has capacity %d", sz)
	}
	got := make([]byte, len(want)+1)
	n, _ := unix.Read(r2, got)
	for n < len(want) {
		m, err := unix.Read(r2, got[n:])
		if err != nil || m == 0 {
			break
		}
		n += m
	}
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("refilled pipe reads %d bytes, want %d", n, len(want))
	}
}

// TestPipeDataBad: entries that cannot be right are refused with the file
// and offset, and data that does not fit is refused before it blocks.
func TestPipeDataBad(t *testing.T) {
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := dir.NewWriter("pipes-data.img")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		w.Write(&pipe_data.PipeDataEntry{PipeId: proto.Uint32(5), Bytes: proto.Uint32(3), Size: proto.Uint32(4096)})
		w.WriteExtra([]byte("abc"))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = readPipeDataImage(dir, "pipes-data.img")
	var ie *images.Error
	if !errors.As(err, &ie) || !errors.Is(err, images.ErrCorrupt) || ie.Offset == 0 || !strings.Contains(err.Error(), "pipe id 5 twice") {
		t.Fatalf("duplicate pipe id: got %v", err)
	}

	_, w2 := selfPipe(t)
	big := &pipeData{size: 4096, bytes: make([]byte, 70000)}
	if err := big.fill(w2); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Fatalf("70000 bytes into a 4096-byte pipe: got %v", err)
	}
}
