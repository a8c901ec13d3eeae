package sockets

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// The restore reads the socket images (queued messages, TCP queues) and
// checks the socket entries of files.img when it opens their files.
// These targets run those readers and checks on the real dumps of
// test/images with one image replaced by the fuzzer's bytes: no panic,
// no allocation a corrupt length asks for, and an error that names the
// image (as files' own targets do for the other kinds).

// seedRestorer is the Restorer of the dump in dir, as the restore makes
// it from files.img (the sockets need no other image of it).
func seedRestorer(tb testing.TB, dir string) (*files.Restorer, error) {
	d, err := images.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	fes, err := images.ReadAll(d, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		return nil, err
	}
	byID := map[uint32]*fdinfo.FileEntry{}
	for _, fe := range fes {
		byID[fe.GetId()] = fe
	}
	return files.NewRestorer(files.RestoreOptions{}, d, byID, nil), nil
}

// fuzzKind fuzzes the images matching glob in the seed dumps that have
// one: read(r, path) is what the restore does with it.
func fuzzKind(f *testing.F, glob string, read func(t *testing.T, r *files.Restorer, path string) error) {
	testutil.FuzzSeedImages(f, glob, func(t *testing.T, path string) error {
		r, err := seedRestorer(t, filepath.Dir(path))
		if err != nil {
			return err // files.img refused, as the restore's readImages does
		}
		err = read(t, r, path)
		if cerr := r.Close(); cerr != nil {
			t.Errorf("close: %v", cerr)
		}
		return err
	})
}

// FuzzSkQueues: the queued messages of unix sockets, with the files they
// carry (SCM_RIGHTS), against the sockets of files.img.
func FuzzSkQueues(f *testing.F) {
	fuzzKind(f, "sk-queues.img", func(t *testing.T, r *files.Restorer, path string) error {
		b := &unixBuild{r: r, byIno: map[uint32]*usk{}, byID: map[uint32]*usk{}}
		if err := b.collect(); err != nil {
			t.Fatalf("seed files.img: %v", err)
		}
		return readUnixQueues(r.Dir, b.byID, func(id uint32) bool { return r.Files[id] != nil })
	})
}

// FuzzUnixFiles: the unix socket entries of files.img as the restore
// indexes and checks them before it makes any socket.
func FuzzUnixFiles(f *testing.F) {
	fuzzKind(f, "files.img", func(t *testing.T, r *files.Restorer, path string) error {
		b := &unixBuild{r: r, byIno: map[uint32]*usk{}, byID: map[uint32]*usk{}}
		if err := b.collect(); err != nil {
			return err
		}
		for _, s := range b.all {
			_ = s.String()
			_ = s.addr()
			_ = b.peer(s)
		}
		return nil
	})
}

func FuzzTCPStream(f *testing.F) {
	fuzzKind(f, "tcp-stream-*.img", func(t *testing.T, r *files.Restorer, path string) error {
		var ino uint32
		if _, err := fmt.Sscanf(filepath.Base(path), "tcp-stream-%d.img", &ino); err != nil {
			t.Fatal(err)
		}
		e, inq, outq, err := readTCPStreamImage(r.Dir, ino)
		if err == nil && (uint64(len(inq)) != uint64(e.GetInqLen()) || uint64(len(outq)) != uint64(e.GetOutqLen())) {
			t.Fatalf("queues of %d and %d bytes for lengths %d and %d", len(inq), len(outq), e.GetInqLen(), e.GetOutqLen())
		}
		return err
	})
}
