package images

import (
	"fmt"
	"strings"
)

// CheckPath refuses a path read from an image that the restore could be
// led astray by. Paths in criu images are absolute from the restore's
// root ("/": stasis has no --root yet) and canonical, as the kernel gives
// them in /proc (d_path never writes "." or ".." components). A ".."
// would let a crafted image climb out of the root once there is one, and
// a relative path would resolve against wherever stasis runs; neither
// comes from a real dump, so both are refused rather than cleaned.
// rel allows a relative path (a unix socket bound by a relative name is
// stored relative, with its directory beside it).
func CheckPath(p string, rel bool) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path: %w", ErrUnsafePath)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q holds a NUL byte: %w", p, ErrUnsafePath)
	case !rel && p[0] != '/':
		return fmt.Errorf("path %q is relative, want absolute from the root: %w", p, ErrUnsafePath)
	case len(p) >= 4096:
		return fmt.Errorf("path of %d bytes, over PATH_MAX: %w", len(p), ErrUnsafePath)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return fmt.Errorf("path %q has a \"..\" component: %w", p, ErrUnsafePath)
		}
	}
	return nil
}
