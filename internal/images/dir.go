package images

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/linux"
)

// Dir is a directory of images (criu -D). It holds no open files: methods
// are safe for concurrent use as long as no two of them write the same file.
type Dir struct {
	Path string
	// Created is set by Create when the directory did not exist before.
	Created bool

	mu      sync.Mutex
	written map[string]bool          // names this Dir created or truncated: see RemoveWritten
	sums    map[string]*checksum.Sum // of the images its writers completed: see Sums
}

// Sums returns the checksums of the images this Dir's writers completed,
// taken from the bytes as they were written, so that the manifest need
// not read them back. Images over checksum.PagesBlock are left out (the
// manifest sums them in bigger blocks).
func (d *Dir) Sums() map[string]*checksum.Sum {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.sums)
}

func (d *Dir) addSum(name string, s *checksum.Sum) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sums == nil {
		d.sums = map[string]*checksum.Sum{}
	}
	if s.Size > checksum.PagesBlock {
		delete(d.sums, name)
		return
	}
	d.sums[name] = s
}

// Track records names written into the directory by other means than
// the Dir's own writers, so that RemoveWritten removes them too.
func (d *Dir) Track(names ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.written == nil {
		d.written = map[string]bool{}
	}
	for _, n := range names {
		d.written[n] = true
	}
}

// RemoveWritten removes every file that this Dir wrote (images, their
// temporary files, tracked names) and nothing else: a failed dump leaves
// no partial image, and the files others put there (runc's
// descriptors.json, a log) stay. It returns how many it removed.
func (d *Dir) RemoveWritten() (int, error) {
	d.mu.Lock()
	names := make([]string, 0, len(d.written))
	for n := range d.written {
		names = append(names, n)
	}
	d.written = nil
	d.mu.Unlock()
	sort.Strings(names)
	n := 0
	var errs []error
	for _, name := range names {
		err := os.Remove(filepath.Join(d.Path, name))
		switch {
		case err == nil:
			n++
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// Open opens an existing, readable image directory.
func Open(path string) (*Dir, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image dir: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open image dir %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open image dir %s: not a directory", path)
	}
	// Opening succeeds on a directory we may not list (mode 0311): read one
	// name to find out now rather than at the first image.
	if _, err := f.Readdirnames(1); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("open image dir %s: %w", path, err)
	}
	return &Dir{Path: path}, nil
}

// Create makes (MkdirAll) an image directory for a new dump, and fails
// with ErrNotWritable if it cannot be created or a file cannot be created
// in it. A previous dump there is replaced, as criu overwrites it (podman
// checkpoints into the same directory after --leave-running): its images
// are removed first, so that none of them is taken for the new dump's.
// Foreign files (runc's descriptors.json, logs) are left alone.
func Create(path string) (*Dir, error) {
	_, serr := os.Lstat(path)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create image dir %s: %w: %w", path, ErrNotWritable, err)
	}
	if _, err := os.Lstat(filepath.Join(path, "inventory.img")); err == nil {
		if err := removeDump(path); err != nil {
			return nil, err
		}
	}
	// Permission bits say nothing for root (read-only mounts, /proc do):
	// the only reliable test is to create a file.
	f, err := os.CreateTemp(path, ".stasis-probe-*")
	if err != nil {
		return nil, fmt.Errorf("create image dir %s: %w: %w", path, ErrNotWritable, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return nil, fmt.Errorf("create image dir %s: %w: %w", path, ErrNotWritable, err)
	}
	return &Dir{Path: path, Created: errors.Is(serr, os.ErrNotExist)}, nil
}

// removeDump removes the images of the dump in path (the names criu
// gives its images), leaving every other file.
func removeDump(path string) error {
	ents, err := os.ReadDir(path)
	if err != nil {
		return fmt.Errorf("replace dump in %s: %w", path, err)
	}
	for _, e := range ents {
		if e.IsDir() || lookup(e.Name()) == nil {
			continue
		}
		if err := os.Remove(filepath.Join(path, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace dump in %s: %w: %w", path, ErrNotWritable, err)
		}
	}
	return nil
}

// path joins name to the directory; names are single path elements.
func (d *Dir) path(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("image name %q in %s: not a file name: %w", name, d.Path, ErrUnsafePath)
	}
	return filepath.Join(d.Path, name), nil
}

// kindOf resolves name to a path and an image kind with entries.
func (d *Dir) kindOf(name, op string) (string, *kind, error) {
	p, err := d.path(name)
	if err != nil {
		return "", nil, err
	}
	k := lookup(name)
	switch {
	case k == nil:
		return "", nil, fmt.Errorf("%s image %s: not a criu image name", op, p)
	case k.isRaw():
		return "", nil, fmt.Errorf("%s image %s: raw image, use OpenRaw/CreateRaw", op, p)
	}
	return p, k, nil
}

// Has reports whether the directory holds a file of that name.
func (d *Dir) Has(name string) bool {
	p, err := d.path(name)
	if err != nil {
		return false
	}
	_, err = os.Lstat(p)
	return err == nil
}

// Write writes a whole image, header chosen from the name. See NewWriter.
func (d *Dir) Write(name string, entries ...proto.Message) error {
	w, err := d.NewWriter(name)
	if err != nil {
		return err
	}
	for _, m := range entries {
		if err := w.Write(m); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

// ReadOne decodes an image that must hold exactly one entry into m.
func (d *Dir) ReadOne(name string, m proto.Message) error {
	r, err := d.NewReader(name)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Next(m); err != nil {
		if errors.Is(err, io.EOF) {
			return r.fr.fail(r.fr.off, fmt.Errorf("%w image: it ends before its first entry", ErrTruncated))
		}
		return err
	}
	return r.fr.expectEOF()
}

// ReadAll decodes every entry of an image, each into a fresh newT(). Extra
// data is skipped; pagemap and ghost-file images, whose first entry has
// its own type, need NewReader.
func ReadAll[T proto.Message](d *Dir, name string, newT func() T) ([]T, error) {
	r, err := d.NewReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []T
	for {
		m := newT()
		err := r.Next(m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
}

// Reader streams the entries of one image.
//
// Entry 0 of pagemap-N.img is a *pagemap.PagemapHead and the rest are
// *pagemap.PagemapEntry; ghost-file-N.img starts with a
// *ghost_file.GhostFileEntry followed by *ghost_file.GhostChunkEntry. Next
// refuses a message of the wrong type, so read the head first.
type Reader struct {
	fr *frameReader
	f  *os.File
}

// NewReader opens an image and checks its header against the name.
func (d *Dir) NewReader(name string) (*Reader, error) {
	p, k, err := d.kindOf(name, "read")
	if err != nil {
		return nil, err
	}
	f, err := OpenFile(p)
	if err != nil {
		return nil, err
	}
	fr := newFrameReader(f, p, streamSize(f))
	if _, err := fr.readHeader(k); err != nil {
		f.Close()
		return nil, err
	}
	return &Reader{fr: fr, f: f}, nil
}

// Must decodes the next entry into m, which the image must hold: where
// the image ends instead, the error is an *Error wrapping ErrTruncated
// that names the file, not a bare io.EOF.
func (r *Reader) Must(m proto.Message) error {
	err := r.fr.next(m)
	if errors.Is(err, io.EOF) {
		return r.fr.fail(r.fr.off, fmt.Errorf("%w image: it ends where a %s entry should be", ErrTruncated, fullName(m)))
	}
	return err
}

// Next decodes the next entry into m (reset first). It returns io.EOF at
// the clean end of the image, *Error otherwise. Extra data of the previous
// entry not fetched with ReadExtra is skipped.
func (r *Reader) Next(m proto.Message) error { return r.fr.next(m) }

// NextRaw returns the bytes of the next entry undecoded, valid until the
// next read, and the offset of its frame; io.EOF at a clean end of image.
// It is for a caller that decodes many small entries itself (a pagemap
// of a migration's chain has tens of thousands); images whose entries
// carry extra data refuse it.
func (r *Reader) NextRaw() ([]byte, int64, error) { return r.fr.nextRaw() }

// ReadExtra returns the raw bytes that follow the entry just read (pipe
// data, socket queue, TCP queues, ghost file content, ipc data), nil if
// it has none. Its length is bounded by what the file holds.
func (r *Reader) ReadExtra() ([]byte, error) { return r.fr.consumeExtra(true) }

// Offset is the file offset of what has been consumed so far: after Next,
// the end of that entry (its extra data, if any, comes next).
func (r *Reader) Offset() int64 { return r.fr.off }

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Writer writes one image. Data goes to name+".tmp", renamed over name by
// a successful Close, so a failed dump never leaves a plausible partial
// image. Errors are sticky: after one, Close removes the temporary file.
type Writer struct {
	enc       *encoder
	f         *os.File
	sum       *checksum.Hasher
	dir       *Dir
	name      string
	path, tmp string
	err       error
	closed    bool
}

// NewWriter starts an image; its header is chosen from the name.
func (d *Dir) NewWriter(name string) (*Writer, error) {
	p, k, err := d.kindOf(name, "write")
	if err != nil {
		return nil, err
	}
	tmp := p + ".tmp"
	d.Track(name, name+".tmp")
	f, err := linux.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	h := checksum.NewHasher(f, checksum.SmallBlock)
	w := &Writer{enc: newEncoder(h, p, k), f: f, sum: h, dir: d, name: name, path: p, tmp: tmp}
	w.err = w.enc.header()
	return w, nil
}

// Write appends one entry. The message type must be the image's (see
// Reader for pagemap and ghost-file), proto2 required fields must be set.
func (w *Writer) Write(m proto.Message) error {
	if w.err == nil {
		w.err = w.enc.entry(m)
	}
	return w.err
}

// WriteExtra appends raw data after the entry just written. Its total
// length must equal what the entry announces (PipeDataEntry.Bytes,
// SkPacketEntry.Length, TcpStreamEntry.InqLen+OutqLen, ...); for
// ipcns-msg it must be the nested messages (EncodeIPCMessages). Several
// calls may split the data.
func (w *Writer) WriteExtra(p []byte) error {
	if w.err == nil {
		w.err = w.enc.extra(p)
	}
	return w.err
}

// Close completes the image and renames it into place. On any error the
// temporary file is removed and nothing appears under the image's name.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err == nil {
		w.err = w.enc.close()
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("write image %s: %w", w.path, err)
	}
	if w.err == nil {
		if err := os.Rename(w.tmp, w.path); err != nil {
			w.err = fmt.Errorf("write image %s: %w", w.path, err)
		}
	}
	if w.err == nil {
		w.dir.addSum(w.name, w.sum.Sum())
	}
	if w.err != nil {
		os.Remove(w.tmp)
	}
	return w.err
}

// Abort discards the image being written.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.err == nil {
		w.err = fmt.Errorf("write image %s: aborted", w.path)
	}
	w.f.Close()
	os.Remove(w.tmp)
}

// CreateRaw creates (truncates) a raw image such as pages-N.img, mode 0600.
func (d *Dir) CreateRaw(name string) (*os.File, error) {
	p, err := d.rawPath(name, "create")
	if err != nil {
		return nil, err
	}
	d.Track(name)
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
}

// OpenRaw opens a raw image read-only.
func (d *Dir) OpenRaw(name string) (*os.File, error) {
	p, err := d.rawPath(name, "open")
	if err != nil {
		return nil, err
	}
	return OpenFile(p)
}

func (d *Dir) rawPath(name, op string) (string, error) {
	p, err := d.path(name)
	if err != nil {
		return "", err
	}
	if k := lookup(name); k == nil || !k.isRaw() {
		return "", fmt.Errorf("%s raw image %s: not a raw image name (pages-N.img, ...)", op, p)
	}
	return p, nil
}
