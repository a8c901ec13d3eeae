package stasis

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/images"
)

// CPUCaps is criu's --cpu-cap bit mask: which of the dumped CPU's
// capabilities a restore checks this CPU for (fpu, cpu, ins), and
// whether a dump writes cpuinfo.img at all (only when --cpu-cap is
// given, as criu's).
type CPUCaps = cpuinfo.Caps

// CPU capability bits, as criu's.
const (
	CPUCapFPU     = cpuinfo.CapFPU
	CPUCapCPU     = cpuinfo.CapCPU
	CPUCapIns     = cpuinfo.CapIns
	CPUCapAll     = cpuinfo.CapAll
	CPUCapDefault = cpuinfo.CapDefault
	CPUCapImage   = cpuinfo.CapImage
)

// ErrCPUMismatch is wrapped when a restore or `cpuinfo check` finds that
// this CPU lacks something the dumped one had.
var ErrCPUMismatch = cpuinfo.ErrMismatch

// ErrNoCPUInfo is wrapped when a check is asked for and the images hold
// no cpuinfo.img.
var ErrNoCPUInfo = cpuinfo.ErrNoImage

// ParseCPUCap parses criu's --cpu-cap[=CAP[,CAP]]: hasArg false for the
// option given without a value (all).
func ParseCPUCap(arg string, hasArg bool) (CPUCaps, error) {
	return cpuinfo.ParseCaps(arg, hasArg)
}

// CPUInfoDump writes this CPU's cpuinfo.img into dir (criu's `cpuinfo
// dump`). dir must exist.
func CPUInfoDump(dir string) error {
	d, err := images.Open(dir)
	if err != nil {
		return fmt.Errorf("cpuinfo dump: %w", err)
	}
	return cpuinfo.Dump(d)
}

// CPUInfoCheck checks dir's cpuinfo.img against this CPU (criu's
// `cpuinfo check`): for caps, or every capability when caps has none
// (criu: --cpu-cap=none checks all here), the default fpu,ins when 0.
func CPUInfoCheck(dir string, caps CPUCaps) error {
	d, err := images.Open(dir)
	if err != nil {
		return fmt.Errorf("cpuinfo check: %w", err)
	}
	if caps&cpuinfo.CapAll == 0 {
		caps = cpuinfo.CapAll
	}
	return cpuinfo.CheckDir(d, caps|cpuinfo.CapImage)
}
