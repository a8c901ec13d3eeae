package mem

import "unsafe"

// sliceAddr is the address of the memory of b, a mapping of stasis'.
func sliceAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
