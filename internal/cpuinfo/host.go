package cpuinfo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/stasis-cr/stasis/internal/linux"
)

// Vendors, as cpuinfo.img names them (cpuinfo.proto's vendor enum).
const (
	VendorUnknown = 0
	VendorIntel   = 1
	VendorAMD     = 2
)

// Words of the capability array, in the order criu 4.2 writes them: the
// kernel's cpufeatures.h words of its time, but for 11 and 16 (criu keeps
// CPUID 7.0 ECX at 11 and the QoS leaf 0xF.0 at 16). Observed against
// criu 4.2's cpuinfo.img on this machine, word for word.
const (
	wordLeaf1EDX     = 0  // CPUID 1 EDX
	wordExt1EDX      = 1  // CPUID 0x80000001 EDX
	wordTransmeta    = 2  // CPUID 0x80860001 EDX
	wordLinux1       = 3  // synthetic bits the kernel sets itself
	wordLeaf1ECX     = 4  // CPUID 1 ECX
	wordCentaur      = 5  // CPUID 0xC0000001 EDX
	wordExt1ECX      = 6  // CPUID 0x80000001 ECX
	wordLinux2       = 7  // scattered bits: criu leaves them 0
	wordLinux3       = 8  // virtualization bits: criu leaves them 0
	wordLeaf7EBX     = 9  // CPUID 7.0 EBX
	wordLeafD1EAX    = 10 // CPUID 0xD.1 EAX
	wordLeaf7ECX     = 11 // CPUID 7.0 ECX
	wordLeafF1EDX    = 12 // CPUID 0xF.1 EDX
	wordExt8EBX      = 13 // CPUID 0x80000008 EBX
	wordLeaf6EAX     = 14 // CPUID 6 EAX
	wordExtAEDX      = 15 // CPUID 0x8000000A EDX
	wordLeafF0EDX    = 16 // CPUID 0xF.0 EDX
	wordExt7EBX      = 17 // CPUID 0x80000007 EBX
	wordLeaf7EDX     = 18 // CPUID 7.0 EDX
	NumWords         = 19 // criu 4.2's NCAPINTS (capability_ver 2)
	numWordsV1       = 12 // capability_ver 1 images
	capabilityVer    = 2
	featureCPUID     = wordLinux1*32 + 25 // the kernel's X86_FEATURE_CPUID
	featureNOPL      = wordLinux1*32 + 20
	featureREPGood   = wordLinux1*32 + 16
	featureFPU       = wordLeaf1EDX*32 + 0
	featureFXSR      = wordLeaf1EDX*32 + 24
	featureSSE       = wordLeaf1EDX*32 + 25
	featureXSAVE     = wordLeaf1ECX*32 + 26
	featureOSXSAVE   = wordLeaf1ECX*32 + 27
	featureAVX       = wordLeaf1ECX*32 + 28
	featureAVX512F   = wordLeaf7EBX*32 + 16
	featureMPX       = wordLeaf7EBX*32 + 14
	featurePKU       = wordLeaf7ECX*32 + 3
	featureXSAVES    = wordLeafD1EAX*32 + 3
	featureXSAVEOPT  = wordLeafD1EAX*32 + 0
	featureXSAVEC    = wordLeafD1EAX*32 + 1
	featureXGETBV1   = wordLeafD1EAX*32 + 2
	featureAMD3DNowX = wordLeaf1EDX*32 + 31 // AMD: bit 31 of leaf 1 is not a feature
)

// Info is one CPU as cpuinfo.img describes it.
type Info struct {
	Vendor              int // VendorIntel, VendorAMD
	Family, Model, Step uint32
	Caps                [NumWords]uint32
	ModelID             string
	XFeatures           uint64 // XSAVE components the state may hold
	XSaveSize, XSaveMax uint32 // standard-format XSAVE size now / at most
	vendorName          string
}

// Has says whether feature bit f (word*32+bit) is set.
func (i *Info) Has(f int) bool { return i.Caps[f/32]&(1<<(f%32)) != 0 }

func (i *Info) set(f int)   { i.Caps[f/32] |= 1 << (f % 32) }
func (i *Info) clear(f int) { i.Caps[f/32] &^= 1 << (f % 32) }

// XSAVE components criu records in xfeatures_mask (user state it knows
// how to restore), and the feature each one needs in CPUID besides.
const xfeatureMax = 10

var xfeatureNeeds = [xfeatureMax]int{
	0: featureFPU, 1: featureSSE, 2: featureAVX, 3: featureMPX, 4: featureMPX,
	5: featureAVX512F, 6: featureAVX512F, 7: featureAVX512F, 8: -1, 9: featurePKU,
}

// criu 4.2 records neither SSE (bit 1; the FXSAVE legacy area holds it
// whatever the mask says) nor PT (bit 8, supervisor state) in the mask:
// observed in its images on this machine (CPUID 0xD.0 EAX 0xe7 -> 0xe5).
// stasis records the same mask, so that each tool's FPU check (a bit of
// the image missing on the host fails it) accepts the other's images.
const xfeaturesRecorded = 1<<0 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<9

// Host is this CPU, read once.
var Host = sync.OnceValues(readHost)

func readHost() (*Info, error) {
	if !hostArch {
		return nil, fmt.Errorf("cpuinfo on %s: %w", runtime.GOARCH, linux.ErrNotSupported)
	}
	i := &Info{}
	max, b, c, d := cpuid(0, 0)
	var v [12]byte
	binary.LittleEndian.PutUint32(v[0:], b)
	binary.LittleEndian.PutUint32(v[4:], d)
	binary.LittleEndian.PutUint32(v[8:], c)
	i.vendorName = string(v[:])
	switch i.vendorName {
	case "GenuineIntel":
		i.Vendor = VendorIntel
	case "AuthenticAMD", "HygonGenuine":
		i.Vendor = VendorAMD
	default:
		i.Vendor = VendorUnknown
	}
	if max >= 1 {
		a, _, c, d := cpuid(1, 0)
		i.Family = (a >> 8) & 0xf
		i.Model = (a >> 4) & 0xf
		i.Step = a & 0xf
		if i.Family == 0xf {
			i.Family += (a >> 20) & 0xff
		}
		if i.Family >= 6 {
			i.Model += ((a >> 16) & 0xf) << 4
		}
		i.Caps[wordLeaf1EDX], i.Caps[wordLeaf1ECX] = d, c
	}
	if max >= 6 {
		a, _, _, _ := cpuid(6, 0)
		i.Caps[wordLeaf6EAX] = a
	}
	if max >= 7 {
		_, b, c, d := cpuid(7, 0)
		i.Caps[wordLeaf7EBX], i.Caps[wordLeaf7ECX], i.Caps[wordLeaf7EDX] = b, c, d
	}
	if max >= 0xd {
		a, _, _, _ := cpuid(0xd, 1)
		i.Caps[wordLeafD1EAX] = a
	}
	if max >= 0xf {
		_, _, _, d := cpuid(0xf, 0)
		i.Caps[wordLeafF0EDX] = d
		if d&(1<<1) != 0 {
			_, _, _, d1 := cpuid(0xf, 1)
			i.Caps[wordLeafF1EDX] = d1
		}
	}
	ext, _, _, _ := cpuid(0x80000000, 0)
	if ext&0xffff0000 == 0x80000000 {
		if ext >= 0x80000001 {
			_, _, c, d := cpuid(0x80000001, 0)
			i.Caps[wordExt1ECX], i.Caps[wordExt1EDX] = c, d
		}
		if ext >= 0x80000004 {
			var brand [48]byte
			for n := uint32(0); n < 3; n++ {
				a, b, c, d := cpuid(0x80000002+n, 0)
				for k, r := range []uint32{a, b, c, d} {
					binary.LittleEndian.PutUint32(brand[n*16+uint32(k)*4:], r)
				}
			}
			if z := bytes.IndexByte(brand[:], 0); z >= 0 {
				i.ModelID = string(brand[:z])
			} else {
				i.ModelID = string(brand[:])
			}
		}
		if ext >= 0x80000007 {
			_, b, _, _ := cpuid(0x80000007, 0)
			i.Caps[wordExt7EBX] = b
		}
		if ext >= 0x80000008 {
			_, b, _, _ := cpuid(0x80000008, 0)
			i.Caps[wordExt8EBX] = b
		}
		if ext >= 0x8000000a {
			_, _, _, d := cpuid(0x8000000a, 0)
			i.Caps[wordExtAEDX] = d
		}
	}
	if t, _, _, _ := cpuid(0x80860000, 0); t&0xffff0000 == 0x80860000 && t >= 0x80860001 {
		_, _, _, d := cpuid(0x80860001, 0)
		i.Caps[wordTransmeta] = d
	}
	if i.vendorName == "CentaurHauls" {
		if c, _, _, _ := cpuid(0xc0000000, 0); c >= 0xc0000001 {
			_, _, _, d := cpuid(0xc0000001, 0)
			i.Caps[wordCentaur] = d
		}
	}
	i.synthetic()
	if max >= 0xd && i.Has(featureXSAVE) {
		i.xsave()
	}
	return i, nil
}

// synthetic sets the kernel's own bits of word 3 that criu sets too (it
// reads them the way the kernel sets them at boot), and clears what the
// kernel clears, so that criu and stasis describe one CPU alike.
func (i *Info) synthetic() {
	i.set(featureCPUID)
	i.set(featureNOPL) // every x86_64 CPU has NOPL
	switch i.Vendor {
	case VendorAMD:
		i.clear(featureAMD3DNowX)
		if i.Family >= 0x10 {
			i.set(featureREPGood)
		}
	case VendorIntel:
		// Fast strings, which the kernel reads from an MSR; on by
		// default on every such CPU.
		if i.Family > 6 || i.Family == 6 && i.Model >= 0xd {
			i.set(featureREPGood)
		}
	}
}

// xsave reads the XSAVE features and sizes (CPUID leaf 0xD).
func (i *Info) xsave() {
	a, b, c, d := cpuid(0xd, 0)
	mask := uint64(a) | uint64(d)<<32
	for n, need := range xfeatureNeeds {
		if need >= 0 && !i.Has(need) {
			mask &^= 1 << n
		}
	}
	i.XFeatures = mask & xfeaturesRecorded
	i.XSaveSize, i.XSaveMax = b, c
}
