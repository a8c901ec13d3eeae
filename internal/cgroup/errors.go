package cgroup

import (
	"errors"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// Sentinel errors of the cgroup package.
var (
	// ErrNotSupported is linux.ErrNotSupported.
	ErrNotSupported = linux.ErrNotSupported
	// ErrBadImage is wrapped by errors about a cgroup.img that decodes
	// but does not fit the tasks' images.
	ErrBadImage = images.ErrInconsistent
	// ErrBadOption is wrapped by errors about --manage-cgroups,
	// --cgroup-root, --cgroup-props and the like.
	ErrBadOption = errors.New("bad cgroup option")
	// ErrMissing is wrapped when a cgroup, a yard or a hierarchy the
	// restore needs is not there and the mode may not create it.
	ErrMissing = errors.New("does not exist")
	// ErrExists is wrapped by --manage-cgroups=strict's refusal of a
	// cgroup that exists already.
	ErrExists = errors.New("exists already")
)
