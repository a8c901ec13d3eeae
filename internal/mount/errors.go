package mount

import (
	"errors"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ErrNotSupported is wrapped by the refusal of a mount stasis cannot dump
// or restore (a file system type, a bind mount from outside the
// container that no --external names). It is linux.ErrNotSupported.
var ErrNotSupported = linux.ErrNotSupported

// ErrBadImage is wrapped by errors about a mountpoints image whose
// entries decode but do not form a tree.
var ErrBadImage = errors.New("inconsistent mount image")

// ErrExternal is wrapped by the error of a restore whose external mount
// (--external mnt[KEY]:PATH, --ext-mount-map KEY:PATH) is not given.
var ErrExternal = errors.New("external mount not given")
