package criuconf

import "errors"

// ErrSyntax is wrapped by the error about a line that does not parse.
var ErrSyntax = errors.New("criu configuration syntax")
