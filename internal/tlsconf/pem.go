package tlsconf

import "encoding/pem"

// pemBlock is the DER of the first PEM block of b, or nil if b is DER.
func pemBlock(b []byte) []byte {
	if blk, _ := pem.Decode(b); blk != nil {
		return blk.Bytes
	}
	return nil
}
