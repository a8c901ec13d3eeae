package mem

import (
	"bufio"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/images"
)

// ImagesXfer is the Xfer into an images dir: pages-ID.img takes the data,
// pagemap-PID.img is written by Close.
type ImagesXfer struct {
	dir  *images.Dir
	name string // of the pagemap image
	id   int
	f    *os.File
	bw   *bufio.Writer // the plan's runs come a page at a time where pages in parent are between them
	h    *checksum.Hasher
	ents []proto.Message
	// Sum is the checksum of the pages image, once closed.
	Sum *checksum.Sum
}

// NewImagesXfer creates pages-PAGESID.img in dir for the pagemap of imgPid.
func NewImagesXfer(dir *images.Dir, imgPid, pagesID int) (*ImagesXfer, error) {
	return NewPagemapXfer(dir, fmt.Sprintf("pagemap-%d.img", imgPid), pagesID)
}

// NewPagemapXfer is NewImagesXfer for the pagemap image name (a page
// server also receives shmem pagemaps).
func NewPagemapXfer(dir *images.Dir, name string, pagesID int) (*ImagesXfer, error) {
	f, err := dir.CreateRaw(fmt.Sprintf("pages-%d.img", pagesID))
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	return &ImagesXfer{dir: dir, name: name, id: pagesID, f: f, bw: bw, h: checksum.NewHasher(bw, checksum.PagesBlock),
		ents: []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(pagesID))}}}, nil
}

func (x *ImagesXfer) Add(e *pagemap.PagemapEntry) error { x.ents = append(x.ents, e); return nil }

func (x *ImagesXfer) Write(b []byte) (int, error) { return x.h.Write(b) }

// Close completes the pages image and writes the pagemap.
func (x *ImagesXfer) Close() error {
	if x.f == nil {
		return nil
	}
	x.Sum = x.h.Sum()
	err := x.bw.Flush()
	if cerr := x.f.Close(); err == nil {
		err = cerr
	}
	x.f = nil
	if err != nil {
		return err
	}
	return x.dir.Write(x.name, x.ents...)
}

// Abort closes the pages image after a failure (the dump removes it).
func (x *ImagesXfer) Abort() {
	if x.f != nil {
		x.f.Close()
		x.f = nil
	}
}
