package linux

import "errors"

// ErrNotSupported is wrapped by every error about something stasis cannot
// checkpoint or restore, or a kernel feature it needs and lacks: the
// error names what, where, and (for a kernel feature) since which kernel
// it exists. The packages' own sentinels for such errors
// (kerndat.ErrNotSupported, files.ErrUnsupported, ...) are this one or
// wrap it, and the root package exports it as stasis.ErrNotSupported.
var ErrNotSupported = errors.New("not supported")
