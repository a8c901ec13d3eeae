package seal

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// Magic starts every sealed file and stream.
const Magic = "STSEAL01"

const (
	headerSize      = 32
	chunkHeaderSize = 16
	// ChunkSize is the plain bytes of a full chunk: large enough for zstd
	// to find repeats across pages, small enough that a worker per core
	// keeps little in flight.
	ChunkSize = 1 << 20
	maxStored = ChunkSize + ChunkSize/8 + 1024 // zstd's worst case and the tag, with room

	flagCompress = 1
	flagEncrypt  = 2

	chunkZstd = 1 // the stored bytes are a zstd frame (else the plain bytes)
	chunkLast = 2
)

// Options say how to seal.
type Options struct {
	Compress bool   // zstd
	Key      []byte // 32 bytes: XChaCha20-Poly1305; nil: no encryption
	// Chunk is the plain bytes of a full chunk (0: ChunkSize, the most).
	Chunk int
}

// Enabled reports whether o seals anything.
func (o Options) Enabled() bool { return o.Compress || o.Key != nil }

// LoadKey reads a key file: 32 raw bytes, or 64 hex digits (and an
// optional newline), as `head -c32 /dev/urandom` or `openssl rand -hex 32`
// make them.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) == chacha20poly1305.KeySize {
		return b, nil
	}
	if t := bytes.TrimSpace(b); len(t) == 2*chacha20poly1305.KeySize {
		k := make([]byte, chacha20poly1305.KeySize)
		if _, err := hex.Decode(k, t); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("key file %s (%d bytes): %w", path, len(b), ErrBadKey)
}

// header is the 32 bytes that start sealed data.
type header struct {
	flags  uint32
	chunk  uint32
	prefix [16]byte
}

func newHeader(o Options) (header, error) {
	h := header{chunk: ChunkSize}
	if o.Chunk > 0 && o.Chunk < ChunkSize {
		h.chunk = uint32(o.Chunk)
	}
	if o.Compress {
		h.flags |= flagCompress
	}
	if o.Key != nil {
		h.flags |= flagEncrypt
		if _, err := rand.Read(h.prefix[:]); err != nil {
			return h, fmt.Errorf("seal: nonce: %w", err)
		}
	}
	return h, nil
}

func (h header) marshal() []byte {
	b := make([]byte, headerSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], h.flags)
	binary.LittleEndian.PutUint32(b[12:], h.chunk)
	copy(b[16:], h.prefix[:])
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize || string(b[:8]) != Magic {
		return h, fmt.Errorf("%w: no %s header", ErrCorrupt, Magic)
	}
	h.flags = binary.LittleEndian.Uint32(b[8:])
	h.chunk = binary.LittleEndian.Uint32(b[12:])
	copy(h.prefix[:], b[16:32])
	if h.flags&^(flagCompress|flagEncrypt) != 0 || h.chunk == 0 || h.chunk > ChunkSize {
		return h, fmt.Errorf("%w: header flags %#x, chunk size %d", ErrCorrupt, h.flags, h.chunk)
	}
	return h, nil
}

// chunkHeader precedes each chunk's stored bytes.
type chunkHeader struct {
	stored, plain, flags, crc uint32
}

func (c chunkHeader) marshal(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], c.stored)
	binary.LittleEndian.PutUint32(b[4:], c.plain)
	binary.LittleEndian.PutUint32(b[8:], c.flags)
	binary.LittleEndian.PutUint32(b[12:], c.crc)
}

func parseChunkHeader(b []byte) chunkHeader {
	return chunkHeader{binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// codec seals and opens the chunks of one file or stream.
type codec struct {
	name string // in errors and in the AEAD's additional data
	h    header
	hdr  []byte
	aead cipher.AEAD
}

func newCodec(name string, h header, key []byte) (*codec, error) {
	c := &codec{name: name, h: h, hdr: h.marshal()}
	if h.flags&flagEncrypt != 0 {
		if key == nil {
			return nil, fmt.Errorf("%s: %w", name, ErrNoKey)
		}
		a, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", name, ErrBadKey, err)
		}
		c.aead = a
	}
	return c, nil
}

func (c *codec) nonce(index uint64) []byte {
	n := make([]byte, chacha20poly1305.NonceSizeX)
	copy(n, c.h.prefix[:])
	binary.LittleEndian.PutUint64(n[16:], index)
	return n
}

func (c *codec) ad(index uint64, ch []byte) []byte {
	ad := make([]byte, 0, len(c.name)+1+headerSize+8+chunkHeaderSize)
	ad = append(ad, c.name...)
	ad = append(ad, 0)
	ad = append(ad, c.hdr...)
	ad = binary.LittleEndian.AppendUint64(ad, index)
	// The stored length changes with the tag: the rest of the chunk
	// header is what is authenticated.
	return append(ad, ch[4:]...)
}

var (
	encoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		return e
	}}
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(2*ChunkSize))
)

// seal turns chunk index of plain data into its header and stored bytes.
func (c *codec) seal(index uint64, plain []byte, last bool) []byte {
	ch := chunkHeader{plain: uint32(len(plain)), crc: crc32.Checksum(plain, castagnoli)}
	if last {
		ch.flags |= chunkLast
	}
	body := plain
	if c.h.flags&flagCompress != 0 && len(plain) > 0 {
		e := encoders.Get().(*zstd.Encoder)
		z := e.EncodeAll(plain, make([]byte, 0, len(plain)/2))
		encoders.Put(e)
		if len(z) < len(plain) {
			body, ch.flags = z, ch.flags|chunkZstd
		}
	}
	out := make([]byte, chunkHeaderSize, chunkHeaderSize+len(body)+chacha20poly1305.Overhead)
	ch.marshal(out)
	if c.aead != nil {
		out = c.aead.Seal(out, c.nonce(index), body, c.ad(index, out[:chunkHeaderSize]))
	} else {
		out = append(out, body...)
	}
	binary.LittleEndian.PutUint32(out[0:], uint32(len(out)-chunkHeaderSize))
	return out
}

// open checks and decodes chunk index (its header ch and stored bytes);
// off is the chunk's offset, for errors.
func (c *codec) open(index uint64, chb, stored []byte, off int64) ([]byte, error) {
	ch := parseChunkHeader(chb)
	fail := func(what string) error {
		return fmt.Errorf("%s: chunk %d at offset %d: %s: %w", c.name, index, off, what, ErrCorrupt)
	}
	body := stored
	if c.aead != nil {
		b, err := c.aead.Open(nil, c.nonce(index), stored, c.ad(index, chb))
		if err != nil {
			return nil, fail("authentication failed")
		}
		body = b
	}
	plain := body
	if ch.flags&chunkZstd != 0 {
		if c.h.flags&flagCompress == 0 {
			return nil, fail("compressed chunk in uncompressed data")
		}
		p, err := decoder.DecodeAll(body, make([]byte, 0, ch.plain))
		if err != nil {
			return nil, fail("zstd: " + err.Error())
		}
		plain = p
	}
	if uint32(len(plain)) != ch.plain {
		return nil, fail(fmt.Sprintf("%d bytes, header says %d", len(plain), ch.plain))
	}
	if crc32.Checksum(plain, castagnoli) != ch.crc {
		return nil, fail("CRC mismatch")
	}
	return plain, nil
}
