package files

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// File validation (criu --file-validation): a file reopened by its path
// at restore must be the one that was dumped, or the task would go on
// with another file's bytes at its old offsets, or map code that does not
// match its saved pages. The entry keeps the file's mode and size (not
// for an append-only log, see checkSize) and, for ELF files, the
// build-id.

// ErrFileChanged is wrapped by errors about files that are not the ones
// that were dumped.
var ErrFileChanged = errors.New("file changed since the dump")

// validate checks the file just opened for fe against what fe says.
func (r *Restorer) validate(f *os.File, fe *fdinfo.FileEntry) error {
	rf := fe.GetReg()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", rf.GetName(), err)
	}
	if rf.Mode != nil && st.Mode != rf.GetMode() {
		return fmt.Errorf("restore file id %d: %s is mode %#o now, %#o when dumped: %w", fe.GetId(), rf.GetName(), st.Mode, rf.GetMode(), ErrFileChanged)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if r.Opts.FileValidation == "buildid" && len(rf.GetBuildId()) > 0 {
		now, err := buildID(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if err != nil {
			return fmt.Errorf("build-id of %s: %w", rf.GetName(), err)
		}
		// Without a build-id now, the size still tells (as criu does).
		if now != nil {
			if !slices.Equal(now, rf.GetBuildId()) {
				return fmt.Errorf("restore file id %d: %s has build-id %s now, %s when dumped: %w",
					fe.GetId(), rf.GetName(), hexID(now), hexID(rf.GetBuildId()), ErrFileChanged)
			}
			return nil
		}
	}
	if rf.Size != nil && uint64(st.Size) != rf.GetSize() {
		return fmt.Errorf("restore file id %d: %s is %d bytes now, %d bytes when dumped: %w (put the dumped file back; append-only files are not checked)",
			fe.GetId(), rf.GetName(), st.Size, rf.GetSize(), ErrFileChanged)
	}
	return nil
}

// buildID returns the GNU build-id of the ELF file at path, packed as
// criu keeps it (packBuildID), or nil if it is not an ELF file or has none.
func buildID(path string) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, nil // not an ELF file after all, for this purpose
	}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := gnuBuildID(data, ef.ByteOrder); id != nil {
			return id, nil
		}
	}
	return nil, nil
}

// gnuBuildID finds the NT_GNU_BUILD_ID note in the notes of a PT_NOTE
// segment (namesz, descsz, type, name and desc padded to 4 bytes).
func gnuBuildID(b []byte, bo binary.ByteOrder) []uint32 {
	const ntGNUBuildID = 3
	for len(b) >= 12 {
		namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		n, d := uint64(namesz+3)&^3, uint64(descsz+3)&^3
		if n+d > uint64(len(b)) {
			return nil
		}
		if typ == ntGNUBuildID && bytes.Equal(b[:namesz], []byte("GNU\x00")) {
			return packBuildID(b[n : n+uint64(descsz)])
		}
		b = b[n+d:]
	}
	return nil
}

// packBuildID packs the build-id bytes into words as criu does (memcpy
// into a uint32 array: four bytes per word, little-endian here, the last
// word padded with zeros).
func packBuildID(id []byte) []uint32 {
	out := make([]uint32, (len(id)+3)/4)
	for i, c := range id {
		out[i/4] |= uint32(c) << (8 * (i % 4))
	}
	return out
}

func hexID(id []uint32) string {
	var s []byte
	for _, w := range id {
		s = binary.LittleEndian.AppendUint32(s, w)
	}
	return fmt.Sprintf("%x", s)
}
