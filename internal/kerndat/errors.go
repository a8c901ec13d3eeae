package kerndat

import "errors"

// ErrNotSupported is wrapped by every error about a missing kernel feature.
var ErrNotSupported = errors.New("not supported")

// ErrPrivilege is wrapped by every error about a privilege stasis lacks:
// root (CAP_SYS_ADMIN), or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE with
// --unprivileged.
var ErrPrivilege = errors.New("insufficient privilege")
