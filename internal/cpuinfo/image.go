package cpuinfo

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/cpuinfo"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// ImageName is the image's file name.
const ImageName = "cpuinfo.img"

// Entry is i as cpuinfo.img holds it: one x86 entry, the fields criu
// 4.2 writes (model_id only when the CPU has a brand string).
func (i *Info) Entry() *cpuinfo.CpuinfoEntry {
	vendor := cpuinfo.CpuinfoX86Entry_UNKNOWN
	switch i.Vendor {
	case VendorIntel:
		vendor = cpuinfo.CpuinfoX86Entry_INTEL
	case VendorAMD:
		vendor = cpuinfo.CpuinfoX86Entry_AMD
	}
	x := &cpuinfo.CpuinfoX86Entry{
		VendorId:      vendor.Enum(),
		CpuFamily:     proto.Uint32(i.Family),
		Model:         proto.Uint32(i.Model),
		Stepping:      proto.Uint32(i.Step),
		CapabilityVer: proto.Uint32(capabilityVer),
		Capability:    append([]uint32(nil), i.Caps[:]...),
		XfeaturesMask: proto.Uint64(i.XFeatures),
		XsaveSize:     proto.Uint32(i.XSaveSize),
		XsaveSizeMax:  proto.Uint32(i.XSaveMax),
	}
	if i.ModelID != "" {
		x.ModelId = proto.String(i.ModelID)
	}
	return &cpuinfo.CpuinfoEntry{X86Entry: []*cpuinfo.CpuinfoX86Entry{x}}
}

// FromEntry is the CPU an image describes; an entry criu could not
// check either is ErrBadImage.
func FromEntry(e *cpuinfo.CpuinfoEntry) (*Info, error) {
	if len(e.GetX86Entry()) == 0 {
		return nil, fmt.Errorf("%s: no x86 entry: %w", ImageName, ErrBadImage)
	}
	x := e.GetX86Entry()[0]
	i := &Info{
		Family: x.GetCpuFamily(), Model: x.GetModel(), Step: x.GetStepping(),
		ModelID: x.GetModelId(), XFeatures: x.GetXfeaturesMask(),
		XSaveSize: x.GetXsaveSize(), XSaveMax: x.GetXsaveSizeMax(),
	}
	switch x.GetVendorId() {
	case cpuinfo.CpuinfoX86Entry_INTEL:
		i.Vendor = VendorIntel
	case cpuinfo.CpuinfoX86Entry_AMD:
		i.Vendor = VendorAMD
	default:
		return nil, fmt.Errorf("%s: cpu: Unknown cpu vendor %d (intel or amd): %w", ImageName, x.GetVendorId(), ErrBadImage)
	}
	// A version 1 image has the first 12 words; the rest were unknown
	// then and are taken as absent.
	n := len(x.GetCapability())
	if n != NumWords && n != numWordsV1 {
		return nil, fmt.Errorf("%s: %d capability words, want %d (or %d for version 1 images): %w", ImageName, n, NumWords, numWordsV1, ErrBadImage)
	}
	copy(i.Caps[:], x.GetCapability())
	return i, nil
}

// Dump writes this CPU's cpuinfo.img into dir (criu's `cpuinfo dump`, and
// a dump with --cpu-cap).
func Dump(dir *images.Dir) error {
	h, err := Host()
	if err != nil {
		return err
	}
	if err := dir.Write(ImageName, h.Entry()); err != nil {
		return fmt.Errorf("cpuinfo dump: %w", err)
	}
	return nil
}

// Read reads dir's cpuinfo.img; ErrNoImage when there is none.
func Read(dir *images.Dir) (*Info, error) {
	e := &cpuinfo.CpuinfoEntry{}
	if err := dir.ReadOne(ImageName, e); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s in %s: %w", ImageName, dir.Path, ErrNoImage)
		}
		return nil, fmt.Errorf("cpuinfo check: %w", err)
	}
	return FromEntry(e)
}

// DumpFor writes cpuinfo.img when caps asks for it (--cpu-cap given at
// dump, as criu: a plain dump writes none).
func DumpFor(dir *images.Dir, caps Caps) error {
	if caps&CapImage == 0 {
		return nil
	}
	return Dump(dir)
}

// CheckDir checks dir's cpuinfo.img against this CPU for caps (criu's
// `cpuinfo check`, and a restore with --cpu-cap). A restore without
// --cpu-cap checks nothing, as criu's.
func CheckDir(dir *images.Dir, caps Caps) error {
	if caps&CapImage == 0 {
		return nil
	}
	img, err := Read(dir)
	if err != nil {
		return err
	}
	h, err := Host()
	if err != nil {
		return err
	}
	if err := Check(img, h, caps); err != nil {
		return fmt.Errorf("cpuinfo check of %s (--cpu-cap=%s): %w", dir.Path, caps, err)
	}
	return nil
}
