package pagesrv

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Commands of struct page_server_iov (criu/page-xfer.c). A command word
// holds the command in its low 16 bits and, for ADD_F, the pagemap
// entry's flags above.
const (
	cmdAdd        = 1 // pages with data (old dumps)
	cmdHole       = 2 // pages in the parent (old dumps)
	cmdOpen       = 3 // start a pagemap, no answer
	cmdOpen2      = 4 // start a pagemap, answered with one has-parent byte
	cmdParent     = 5 // does the server have a parent pagemap: an int32
	cmdAddF       = 6 // an entry with flags; data follows if PE_PRESENT
	cmdGet        = 7 // lazy restore: request pages
	cmdClose      = 0x1023
	cmdForceClose = 0x1024

	cmdBits = 16
	cmdMask = 1<<cmdBits - 1

	// dst_id: the pagemap's id << 8 | its type.
	typeBits  = 8
	typeMask  = 1<<typeBits - 1
	typePid   = 1
	typeShmem = 2

	iovSize = 32 // u32 cmd, 4 bytes of padding, u64 nr_pages, vaddr, dst_id

	pePresent = 4 // PE_PRESENT
	peParent  = 1 // PE_PARENT

	pageSize = 4096
)

// iov is struct page_server_iov.
type iov struct {
	Cmd     uint32
	NrPages uint64
	Vaddr   uint64
	DstID   uint64
}

func (v iov) marshal() []byte {
	b := make([]byte, iovSize)
	binary.LittleEndian.PutUint32(b[0:], v.Cmd)
	binary.LittleEndian.PutUint64(b[8:], v.NrPages)
	binary.LittleEndian.PutUint64(b[16:], v.Vaddr)
	binary.LittleEndian.PutUint64(b[24:], v.DstID)
	return b
}

func readIov(r io.Reader) (iov, error) {
	var b [iovSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return iov{}, err
	}
	return iov{
		Cmd:     binary.LittleEndian.Uint32(b[0:]),
		NrPages: binary.LittleEndian.Uint64(b[8:]),
		Vaddr:   binary.LittleEndian.Uint64(b[16:]),
		DstID:   binary.LittleEndian.Uint64(b[24:]),
	}, nil
}

// pidDst is the dst_id of process imgPid's pagemap.
func pidDst(imgPid int) uint64 { return uint64(imgPid)<<typeBits | typePid }

// pagemapName decodes a dst_id into the pagemap image it names; the
// odd types are those older criu versions sent (criu's decode_pm).
func pagemapName(dst uint64) (string, error) {
	id := dst >> typeBits
	switch dst & typeMask {
	case typePid, 10, 11, 16, 17:
		return fmt.Sprintf("pagemap-%d.img", id), nil
	case typeShmem, 27, 28, 29, 32, 33, 34:
		return fmt.Sprintf("pagemap-shmem-%d.img", id), nil
	}
	return "", fmt.Errorf("%w: unknown pagemap type %d in dst_id %#x", ErrProtocol, dst&typeMask, dst)
}
