package images

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"
)

// encoder writes criu's framing and checks what it writes against the
// kind: message types, the entry count of single-entry images and the size
// of every extra blob, so that a caller's mistake fails here, naming the
// file, instead of at restore time.
type encoder struct {
	w    *bufio.Writer
	file string
	kind *kind
	off  int64
	idx  int

	pending  extraSpec // extra the last entry announced
	extraN   uint64    // extra bytes written since the last entry
	extraBuf []byte    // ipc message extras, kept to be validated
	buf      []byte
}

func newEncoder(w io.Writer, file string, k *kind) *encoder {
	b := encBufs.Get().(*bufio.Writer)
	b.Reset(w)
	return &encoder{w: b, file: file, kind: k}
}

// encBufs keeps the encoders' 64 KiB buffers between images: a dump
// writes half a dozen images per process, most of a few hundred bytes,
// and a buffer made for each is fresh memory, a fault per page touched
// on these VMs (~20 µs each).
var encBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

func (e *encoder) fail(err error) error {
	return &Error{File: e.file, Offset: e.off, Err: err}
}

func (e *encoder) write(p []byte) error {
	if e.w == nil {
		return e.fail(errClosed)
	}
	n, err := e.w.Write(p)
	e.off += int64(n)
	if err != nil {
		return e.fail(err)
	}
	return nil
}

func (e *encoder) header() error {
	first, second, two := headerOf(e.kind)
	b := binary.LittleEndian.AppendUint32(nil, first)
	if two {
		b = binary.LittleEndian.AppendUint32(b, second)
	}
	return e.write(b)
}

// entry writes one entry. Marshal uses default options on purpose: it
// refuses messages with unset proto2 required fields, which criu's
// protobuf-c would reject on restore. Deterministic: stasis' own
// messages (stasis.go) are dynamic, whose fields are otherwise written in
// map order.
func (e *encoder) entry(m proto.Message) error {
	if err := e.finishEntry(); err != nil {
		return err
	}
	if e.kind.single && e.idx > 0 {
		return e.fail(fmt.Errorf("a %s image holds exactly one entry", e.kind.magic))
	}
	if e.pending.rest {
		return e.fail(fmt.Errorf("no entry may follow the content of a %s image", e.kind.magic))
	}
	if want := e.kind.msgType(e.idx); fullName(m) != fullName(want) {
		return e.fail(fmt.Errorf("entry %d of a %s image must be a %s, not %s", e.idx, e.kind.magic, fullName(want), fullName(m)))
	}
	var err error
	e.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(binary.LittleEndian.AppendUint32(e.buf[:0], 0), m)
	if err != nil {
		return e.fail(fmt.Errorf("encode entry %d (%s): %w", e.idx, fullName(m), err))
	}
	size := len(e.buf) - 4
	if size > MaxEntrySize {
		return e.fail(fmt.Errorf("encode entry %d (%s): %d bytes exceed the %d byte limit", e.idx, fullName(m), size, MaxEntrySize))
	}
	binary.LittleEndian.PutUint32(e.buf, uint32(size))
	if err := e.write(e.buf); err != nil {
		return err
	}
	if e.kind.extra != nil {
		e.pending = e.kind.extra(m, e.idx)
	}
	e.idx++
	return nil
}

// extra appends raw bytes after the last entry.
func (e *encoder) extra(p []byte) error {
	s := e.pending
	switch {
	case e.idx == 0 || s.none():
		return e.fail(fmt.Errorf("entry %d of a %s image carries no extra data", e.idx-1, e.kind.magic))
	case s.n > 0 && uint64(len(p)) > s.n-e.extraN:
		return e.fail(fmt.Errorf("entry %d of a %s image announces %d bytes of extra data, got %d",
			e.idx-1, e.kind.magic, s.n, e.extraN+uint64(len(p))))
	case s.msgs > 0:
		e.extraBuf = append(e.extraBuf, p...)
	}
	e.extraN += uint64(len(p))
	return e.write(p)
}

// finishEntry checks that the last entry got all the extra data it announced.
func (e *encoder) finishEntry() error {
	s := e.pending
	defer func() {
		if !s.rest {
			e.pending, e.extraN, e.extraBuf = extraSpec{}, 0, e.extraBuf[:0]
		}
	}()
	switch {
	case s.n > 0 && e.extraN != s.n:
		return e.fail(fmt.Errorf("entry %d of a %s image announces %d bytes of extra data, got %d",
			e.idx-1, e.kind.magic, s.n, e.extraN))
	case s.msgs > 0:
		// Parse what was written with the reader's own code.
		fr := newFrameReader(bytes.NewReader(e.extraBuf), e.file, int64(len(e.extraBuf)))
		fr.kind = e.kind
		if _, err := fr.ipcMsgs(s.msgs, false); err != nil {
			return e.fail(fmt.Errorf("entry %d: extra data is not %d ipc messages: %w", e.idx-1, s.msgs, err))
		}
		if fr.off != int64(len(e.extraBuf)) {
			return e.fail(fmt.Errorf("entry %d: %d bytes after its %d ipc messages", e.idx-1, int64(len(e.extraBuf))-fr.off, s.msgs))
		}
	}
	return nil
}

// close checks the image is complete and flushes it.
func (e *encoder) close() error {
	if err := e.finishEntry(); err != nil {
		return err
	}
	if e.idx == 0 && (e.kind.single || e.kind.first != nil) {
		return e.fail(fmt.Errorf("a %s image needs at least one entry", e.kind.magic))
	}
	if e.w == nil {
		return e.fail(errClosed)
	}
	if err := e.w.Flush(); err != nil {
		return e.fail(err)
	}
	e.w.Reset(nil)
	encBufs.Put(e.w)
	e.w = nil
	return nil
}

// Encode writes img to w as an image of the given name (which chooses the
// header), applying the same checks as Writer.
func Encode(w io.Writer, name string, img *Image) error {
	k := lookup(name)
	if k == nil || k.isRaw() {
		return fmt.Errorf("encode image %s: not a criu image name with entries", name)
	}
	if img.Magic != "" && img.Magic != k.magic {
		return fmt.Errorf("encode image %s: magic %s does not match the name (%s)", name, img.Magic, k.magic)
	}
	if img.Extra != nil && len(img.Extra) != len(img.Entries) {
		return errors.New("encode image " + name + ": Extra and Entries differ in length")
	}
	e := newEncoder(w, name, k)
	if err := e.header(); err != nil {
		return err
	}
	for i, m := range img.Entries {
		if err := e.entry(m); err != nil {
			return err
		}
		if img.Extra != nil && len(img.Extra[i]) > 0 {
			if err := e.extra(img.Extra[i]); err != nil {
				return err
			}
		}
	}
	return e.close()
}
