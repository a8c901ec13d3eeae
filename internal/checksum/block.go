package checksum

import "hash/crc32"

// BlockCRC is the CRC32C of one block, as a Sum holds it: for writers that
// fill a file's blocks out of order (the dump's parallel page copy) and
// build its Sum themselves.
func BlockCRC(b []byte) uint32 { return crc32.Checksum(b, table) }
