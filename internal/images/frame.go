package images

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	ipc_msg "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-msg"
	"google.golang.org/protobuf/proto"
)

// MaxEntrySize bounds the u32 size of one protobuf entry. criu's largest
// entries (mm with thousands of VMAs, seccomp filters) stay far below it; a
// larger size is corruption, and honouring it would let a 4-byte field make
// us allocate 4 GiB.
const MaxEntrySize = 64 << 20

// allocChunk is how much we allocate ahead of the data when the stream
// length is unknown: memory then grows only as fast as bytes really arrive.
const allocChunk = 1 << 20

// frameReader decodes criu's framing (header, u32 size + protobuf entries,
// extra blobs) from a stream, tracking the offset for error messages.
type frameReader struct {
	r    *bufio.Reader
	file string
	kind *kind
	off  int64 // bytes consumed from the start of the image
	size int64 // total image length, or -1 when the stream cannot tell
	idx  int   // entries decoded so far

	pending  extraSpec // extra blob after the last entry, not consumed yet
	restDone bool      // a to-EOF extra was consumed: nothing may follow
	buf      []byte
}

func newFrameReader(r io.Reader, file string, size int64) *frameReader {
	// A buffer no bigger than the file: a restore of 10,000 threads
	// reads as many core images of ~1 KiB, and 64 KiB buffers for each
	// cost it 640 MB of zeroed allocations.
	n := 64 << 10
	if size >= 0 && size < int64(n) {
		n = int(size) + 1 // bufio makes it at least 16
	}
	return &frameReader{r: bufio.NewReaderSize(r, n), file: file, size: size}
}

// streamSize returns how many bytes r has left when r can tell cheaply and
// reliably, else -1.
func streamSize(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }: // bytes.Reader, strings.Reader, bytes.Buffer
		return int64(v.Len())
	case *os.File:
		st, err := v.Stat()
		if err != nil || !st.Mode().IsRegular() {
			return -1
		}
		pos, err := v.Seek(0, io.SeekCurrent)
		if err != nil || pos > st.Size() {
			return -1
		}
		return st.Size() - pos
	}
	return -1
}

func (fr *frameReader) fail(off int64, err error) error {
	return &Error{File: fr.file, Offset: off, Err: err}
}

func (fr *frameReader) truncated(off int64, what string, want uint64, have int64) error {
	return fr.fail(off, fmt.Errorf("%w %s: want %d bytes, have %d", ErrTruncated, what, want, have))
}

// remaining is the number of unread bytes, or -1 if unknown.
func (fr *frameReader) remaining() int64 {
	if fr.size < 0 {
		return -1
	}
	return fr.size - fr.off
}

// readU32 reads a little-endian u32; n is how many bytes were there.
func (fr *frameReader) readU32() (v uint32, n int, err error) {
	var b [4]byte
	n, err = io.ReadFull(fr.r, b[:])
	fr.off += int64(n)
	return binary.LittleEndian.Uint32(b[:]), n, err
}

// headerOf returns the words an image of kind k starts with.
func headerOf(k *kind) (first uint32, second uint32, two bool) {
	switch {
	case k.value == inventoryMagic:
		return inventoryMagic, 0, false
	case k.service:
		return imgServiceMagic, k.value, true
	}
	return imgCommonMagic, k.value, true
}

func magicName(v uint32) string {
	if n, ok := magicNames[v]; ok {
		return fmt.Sprintf("%s (%#x)", n, v)
	}
	return fmt.Sprintf("%#x", v)
}

// readHeader checks the header against want, or when want is nil
// identifies the kind from the magic.
func (fr *frameReader) readHeader(want *kind) (*kind, error) {
	first, n, err := fr.readU32()
	if err != nil {
		return nil, fr.headerErr(0, n, err)
	}
	if want != nil {
		wf, ws, two := headerOf(want)
		if first != wf {
			return nil, fr.fail(0, fmt.Errorf("%w: want %s for %s, have %s", ErrBadMagic, magicName(wf), want.magic, magicName(first)))
		}
		if two {
			second, n, err := fr.readU32()
			if err != nil {
				return nil, fr.headerErr(4, n, err)
			}
			if second != ws {
				return nil, fr.fail(4, fmt.Errorf("%w: want %s, have %s", ErrBadMagic, magicName(ws), magicName(second)))
			}
		}
		fr.kind = want
		return want, nil
	}

	var k *kind
	switch first {
	case inventoryMagic:
		k = byMagic[inventoryMagic]
	case imgCommonMagic, imgServiceMagic:
		second, n, err := fr.readU32()
		if err != nil {
			return nil, fr.headerErr(4, n, err)
		}
		k = byMagic[second]
		if k == nil || k.value == inventoryMagic || k.service != (first == imgServiceMagic) {
			return nil, fr.fail(4, fmt.Errorf("%w: no image kind for %s after %s", ErrBadMagic, magicName(second), magicName(first)))
		}
	default:
		return nil, fr.fail(0, fmt.Errorf("%w: %s is not a criu image header", ErrBadMagic, magicName(first)))
	}
	fr.kind = k
	return k, nil
}

func (fr *frameReader) headerErr(off int64, n int, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fr.truncated(off, "header", 4, int64(n))
	}
	return fr.fail(off, err)
}

// readN reads exactly n bytes. The caller has bounded n; when the stream
// length is unknown the buffer grows with the data instead of trusting n.
func (fr *frameReader) readN(n uint64, dst []byte) ([]byte, int64, error) {
	if rem := fr.remaining(); (rem >= 0 && n <= uint64(rem)) || n <= allocChunk {
		if uint64(cap(dst)) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		got, err := io.ReadFull(fr.r, dst)
		fr.off += int64(got)
		return dst, int64(got), err
	}
	dst = dst[:0]
	var got int64
	for uint64(got) < n {
		step := min(n-uint64(got), allocChunk)
		dst = append(dst, make([]byte, step)...)
		k, err := io.ReadFull(fr.r, dst[got:got+int64(step)])
		got += int64(k)
		fr.off += int64(k)
		if err != nil {
			return dst[:got], got, err
		}
	}
	return dst, got, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }

// next decodes the next entry into m; io.EOF at a clean end of image.
func (fr *frameReader) next(m proto.Message) error {
	if want := fr.kind.msgType(fr.idx); fullName(m) != fullName(want) {
		return fr.fail(fr.off, fmt.Errorf("entry %d of a %s image is a %s, cannot decode it into %s",
			fr.idx, fr.kind.magic, fullName(want), fullName(m)))
	}
	eoff := fr.off
	b, err := fr.nextFrame()
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fr.fail(eoff, fmt.Errorf("%w entry: %s: %w", ErrCorrupt, fullName(m), err))
	}
	if fr.kind.extra != nil {
		fr.pending = fr.kind.extra(m, fr.idx)
	}
	fr.idx++
	return nil
}

// nextRaw returns the bytes of the next entry, valid until the next read,
// and its offset; io.EOF at a clean end of image. Only for images whose
// entries have no extra data (which the decoded entry would size).
func (fr *frameReader) nextRaw() ([]byte, int64, error) {
	if fr.kind.extra != nil {
		return nil, fr.off, fr.fail(fr.off, fmt.Errorf("a %s image has extra data after its entries: it cannot be read raw", fr.kind.magic))
	}
	eoff := fr.off
	b, err := fr.nextFrame()
	if err != nil {
		return nil, eoff, err
	}
	fr.idx++
	return b, eoff, nil
}

// nextFrame reads the next entry's frame, after the extra data of the
// one before, into fr.buf.
func (fr *frameReader) nextFrame() ([]byte, error) {
	if _, err := fr.consumeExtra(false); err != nil {
		return nil, err
	}
	if fr.restDone {
		return nil, io.EOF
	}
	eoff := fr.off
	size, n, err := fr.readU32()
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil, io.EOF
	case isEOF(err):
		return nil, fr.truncated(eoff, "entry size field", 4, int64(n))
	case err != nil:
		return nil, fr.fail(eoff, err)
	}
	if size > MaxEntrySize {
		return nil, fr.fail(eoff, fmt.Errorf("%w entry: size %d exceeds the %d byte limit", ErrCorrupt, size, MaxEntrySize))
	}
	if rem := fr.remaining(); rem >= 0 && int64(size) > rem {
		return nil, fr.truncated(eoff, "entry", uint64(size), rem)
	}
	var got int64
	fr.buf, got, err = fr.readN(uint64(size), fr.buf)
	if err != nil {
		if isEOF(err) {
			return nil, fr.truncated(eoff, "entry", uint64(size), got)
		}
		return nil, fr.fail(eoff, err)
	}
	return fr.buf, nil
}

// consumeExtra reads (keep) or skips the extra blob of the last entry.
func (fr *frameReader) consumeExtra(keep bool) ([]byte, error) {
	spec := fr.pending
	fr.pending = extraSpec{}
	eoff := fr.off
	switch {
	case spec.rest:
		fr.restDone = true
		if !keep {
			got, err := io.Copy(io.Discard, fr.r)
			fr.off += got
			if err != nil {
				return nil, fr.fail(eoff, err)
			}
			return nil, nil
		}
		b, err := io.ReadAll(fr.r)
		fr.off += int64(len(b))
		if err != nil {
			return nil, fr.fail(eoff, err)
		}
		return b, nil
	case spec.msgs > 0:
		return fr.ipcMsgs(spec.msgs, keep)
	case spec.n > 0:
		return fr.blob(spec.n, keep, "extra data")
	}
	return nil, nil
}

// blob reads or skips n raw bytes.
func (fr *frameReader) blob(n uint64, keep bool, what string) ([]byte, error) {
	eoff := fr.off
	if rem := fr.remaining(); rem >= 0 && n > uint64(rem) {
		return nil, fr.truncated(eoff, what, n, rem)
	}
	if n > 1<<62 {
		return nil, fr.truncated(eoff, what, n, 0)
	}
	if !keep {
		got, err := io.CopyN(io.Discard, fr.r, int64(n))
		fr.off += got
		if err != nil {
			if isEOF(err) {
				return nil, fr.truncated(eoff, what, n, got)
			}
			return nil, fr.fail(eoff, err)
		}
		return nil, nil
	}
	b, got, err := fr.readN(n, nil)
	if err != nil {
		if isEOF(err) {
			return nil, fr.truncated(eoff, what, n, got)
		}
		return nil, fr.fail(eoff, err)
	}
	return b, nil
}

// ipcMsgs handles the extra of an ipcns-msg entry: qnum times
// (u32 size, ipc_msg, mtext padded to 8 bytes), as ipc_ns.c writes it.
func (fr *frameReader) ipcMsgs(qnum uint32, keep bool) ([]byte, error) {
	var out []byte
	for i := uint32(0); i < qnum; i++ {
		eoff := fr.off
		size, n, err := fr.readU32()
		if err != nil {
			if isEOF(err) {
				return nil, fr.truncated(eoff, fmt.Sprintf("ipc message %d size field", i), 4, int64(n))
			}
			return nil, fr.fail(eoff, err)
		}
		if size > MaxEntrySize {
			return nil, fr.fail(eoff, fmt.Errorf("%w ipc message %d: size %d exceeds the %d byte limit", ErrCorrupt, i, size, MaxEntrySize))
		}
		msgBytes, err := fr.blob(uint64(size), true, fmt.Sprintf("ipc message %d", i))
		if err != nil {
			return nil, err
		}
		var msg ipc_msg.IpcMsg
		if err := proto.Unmarshal(msgBytes, &msg); err != nil {
			return nil, fr.fail(eoff, fmt.Errorf("%w ipc message %d: %w", ErrCorrupt, i, err))
		}
		text, err := fr.blob(roundUp(uint64(msg.GetMsize()), 8), keep, fmt.Sprintf("ipc message %d text", i))
		if err != nil {
			return nil, err
		}
		if keep {
			out = binary.LittleEndian.AppendUint32(out, size)
			out = append(out, msgBytes...)
			out = append(out, text...)
		}
	}
	return out, nil
}

// atEOF skips any pending extra and reports whether the image ends here.
func (fr *frameReader) atEOF() (bool, error) {
	if _, err := fr.consumeExtra(false); err != nil {
		return false, err
	}
	_, err := fr.r.Peek(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	if err != nil {
		return false, fr.fail(fr.off, err)
	}
	return false, nil
}

// Image is a decoded image file.
type Image struct {
	Magic   string          // magic name as crit prints it: "CORE", "PAGEMAP", "INVENTORY"
	Entries []proto.Message // concrete go-criu types (*criu_core.CoreEntry, ...)
	// Extra is nil for kinds without extra blobs. Otherwise it is as long
	// as Entries and Extra[i] holds
	// the raw bytes that follow Entries[i] (pipe data, socket queues, ghost
	// file content, ...), nil where the entry has none.
	Extra [][]byte
}

// Decode decodes a whole image from r. The kind is identified by the
// magic; if name (a path or base name) is a known image name, the magic
// must match it. name is used in errors. Raw images (pages-N.img) have no
// header and are refused: see IsRaw.
func Decode(r io.Reader, name string) (*Image, error) {
	want := lookup(name)
	if want != nil && want.isRaw() {
		return nil, fmt.Errorf("image %s: raw image, it holds no entries", name)
	}
	fr := newFrameReader(r, name, streamSize(r))
	k, err := fr.readHeader(want)
	if err != nil {
		return nil, err
	}
	img := &Image{Magic: k.magic}
	if k.extra != nil {
		img.Extra = [][]byte{}
	}
	for {
		m := k.newMsg(fr.idx)
		err := fr.next(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		img.Entries = append(img.Entries, m)
		if k.extra != nil {
			x, err := fr.consumeExtra(true)
			if err != nil {
				return nil, err
			}
			img.Extra = append(img.Extra, x)
		}
		if k.single {
			if err := fr.expectEOF(); err != nil {
				return nil, err
			}
			break
		}
	}
	if len(img.Entries) == 0 && (k.single || k.first != nil) {
		return nil, fr.fail(fr.off, fmt.Errorf("%w image: it ends before its first entry", ErrTruncated))
	}
	return img, nil
}

func (fr *frameReader) expectEOF() error {
	eof, err := fr.atEOF()
	if err != nil {
		return err
	}
	if !eof {
		return fr.fail(fr.off, fmt.Errorf("%w image: trailing data after the only entry of a %s image", ErrCorrupt, fr.kind.magic))
	}
	return nil
}

// decodeBytes is Decode over a byte slice (tests, encoder self-checks).
