package images

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/linux"
)

// Single is one single-entry image to write (WriteParallel).
type Single struct {
	Name string
	Msg  proto.Message
}

// parallelWriters is how many goroutines WriteParallel writes on: the
// encoding needs a CPU, the create and rename wait for the file system.
const parallelWriters = 4

// WriteParallel writes many single-entry images (a core image per
// thread: ten thousand for a big process) on a few goroutines; their
// checksums go to Sums, as other writers' do, so that the manifest need
// not read them back. Each image is encoded into a buffer its goroutine reuses (a
// Writer's 64 KiB buffer apiece made gigabytes of garbage), written with
// one write(2) to a temporary file and renamed into place, as Writer
// does: nothing appears under an image's name before it is complete.
func (d *Dir) WriteParallel(imgs []Single) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	errs := make([]error, min(parallelWriters, len(imgs)))
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			bw := bufio.NewWriterSize(&buf, 4096)
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(imgs) {
					return
				}
				s, err := d.writeSingle(imgs[i], &buf, bw)
				if err != nil {
					errs[w] = err
					failed.Store(true)
					return
				}
				d.addSum(imgs[i].Name, s)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeSingle encodes im into buf (through bw) and writes it to its file.
func (d *Dir) writeSingle(im Single, buf *bytes.Buffer, bw *bufio.Writer) (*checksum.Sum, error) {
	p, k, err := d.kindOf(im.Name, "write")
	if err != nil {
		return nil, err
	}
	buf.Reset()
	bw.Reset(buf)
	e := &encoder{w: bw, file: p, kind: k}
	if err := e.header(); err != nil {
		return nil, err
	}
	if err := e.entry(im.Msg); err != nil {
		return nil, err
	}
	if err := e.close(); err != nil {
		return nil, err
	}
	tmp := p + ".tmp"
	d.Track(im.Name, im.Name+".tmp")
	fd, err := linux.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	err = linux.WriteAll(fd, buf.Bytes())
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		// renameat(2) itself: os.Rename first lstats the target.
		err = unix.Rename(tmp, p)
	}
	if err != nil {
		_ = unix.Unlink(tmp)
		return nil, fmt.Errorf("write image %s: %w", p, err)
	}
	return checksum.Of(buf.Bytes()), nil
}
