package kerndat

import (
	"errors"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ErrNotSupported is wrapped by every error about a missing kernel
// feature. It is linux.ErrNotSupported, stasis' one "not supported".
var ErrNotSupported = linux.ErrNotSupported

// ErrPrivilege is wrapped by every error about a privilege stasis lacks:
// root (CAP_SYS_ADMIN), or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE with
// --unprivileged.
var ErrPrivilege = errors.New("insufficient privilege")
