package cpuinfo

import "errors"

var (
	// ErrMismatch is wrapped when the image's CPU has something this CPU
	// lacks, for the capabilities checked (criu: "CPU capabilities do not
	// match run time" and its kin).
	ErrMismatch = errors.New("cpu does not match the image")
	// ErrNoImage is wrapped when a check is asked for and the images hold
	// no cpuinfo.img (criu: "No cpuinfo image").
	ErrNoImage = errors.New("no cpuinfo image")
	// ErrBadImage is wrapped when cpuinfo.img decodes but cannot be
	// checked: no x86 entry, an unknown vendor, a capability array of a
	// size criu never wrote.
	ErrBadImage = errors.New("bad cpuinfo image")
	// ErrBadCaps is wrapped by ParseCaps for an argument criu refuses.
	ErrBadCaps = errors.New("bad --cpu-cap")
)
