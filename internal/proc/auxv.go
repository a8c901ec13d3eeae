package proc

import "encoding/binary"

// ParseAuxv splits /proc/PID/auxv into its native-endian 64-bit words: type,
// value, type, value, ..., ending with the AT_NULL pair (0, 0), which is
// included. A kernel thread's empty auxv gives nil. Anything that is not
// whole pairs ending in AT_NULL is an error.
func ParseAuxv(b []byte) ([]uint64, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b)%16 != 0 {
		return nil, syntaxErr("auxv", 0, "%d bytes, not a whole number of 16-byte pairs", len(b))
	}
	words := make([]uint64, len(b)/8)
	for i := range words {
		words[i] = binary.NativeEndian.Uint64(b[i*8:])
	}
	if words[len(words)-2] != 0 {
		return nil, syntaxErr("auxv", 0, "does not end with AT_NULL")
	}
	return words, nil
}
