package cpuinfo

import (
	"fmt"
	"strings"
)

// Caps is criu's cpu_cap bit mask (the --cpu-cap option and the RPC's
// cpu_cap field carry the same bits).
type Caps uint32

const (
	// CapFPU: the FPU state the image holds can be loaded here (FPU,
	// FXSR, XSAVE features and sizes).
	CapFPU Caps = 1 << 0
	// CapCPU: every CPUID feature word is the same (strict).
	CapCPU Caps = 1 << 1
	// CapIns: every instruction set extension the image's CPU had, this
	// CPU has.
	CapIns Caps = 1 << 2
	// CapImage: --cpu-cap was given: dump writes cpuinfo.img and restore
	// checks it (a plain dump writes none and a plain restore checks
	// nothing, as criu's).
	CapImage Caps = 1 << 3
	// CapAll is --cpu-cap without an argument, or =all.
	CapAll = CapFPU | CapCPU | CapIns
	// CapDefault is criu's default set (checked by `cpuinfo check`).
	CapDefault = CapFPU | CapIns
)

// ParseCaps parses criu's --cpu-cap[=CAP[,CAP...]] (fpu, cpu, ins, all,
// none; "^" before a name takes it away): without an argument, all. The
// result has CapImage but for none alone, as criu's: --cpu-cap=none
// writes and checks nothing.
func ParseCaps(arg string, hasArg bool) (Caps, error) {
	if !hasArg {
		return CapAll | CapImage, nil
	}
	c := CapDefault
	for _, tok := range strings.Split(arg, ",") {
		inverse := false
		for strings.HasPrefix(tok, "^") {
			inverse, tok = !inverse, tok[1:]
		}
		var bits Caps
		switch tok {
		case "fpu":
			bits = CapFPU
		case "cpu":
			bits = CapCPU
		case "ins":
			bits = CapIns
		case "all":
			bits = CapAll
		case "none":
			if inverse {
				c |= CapAll
			} else {
				c = 0
			}
			continue
		default:
			return 0, fmt.Errorf("--cpu-cap=%s: unknown capability %q (fpu, cpu, ins, all, none): %w", arg, tok, ErrBadCaps)
		}
		if inverse {
			c &^= bits
		} else {
			c |= bits
		}
	}
	if c&CapAll != 0 {
		c |= CapImage
	}
	return c, nil
}

// String is the --cpu-cap argument that gives c.
func (c Caps) String() string {
	var s []string
	for _, n := range []struct {
		b    Caps
		name string
	}{{CapFPU, "fpu"}, {CapCPU, "cpu"}, {CapIns, "ins"}} {
		if c&n.b != 0 {
			s = append(s, n.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}
