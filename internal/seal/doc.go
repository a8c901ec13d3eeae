// Package seal is stasis' own container for compressed and encrypted
// data (--compress, --encrypt --key-file): images and streams are cut
// into chunks, each compressed with zstd and/or sealed with
// XChaCha20-Poly1305, in parallel. It is a stasis extension: criu 4.2
// reads none of it, so nothing is sealed unless asked.
//
//	format.go  the header and chunk layout, keys (LoadKey)
//	writer.go  Writer: a parallel sealing io.WriteCloser with Flush
//	reader.go  Reader: the streaming, in-order reader; errors name the
//	           file (or stream) and offset of a bad chunk
//	file.go    SealFile (in place), OpenFile (a sealed file decoded
//	           into a memfd, in parallel), IsSealed
//	conn.go    Conn: both directions of a connection sealed (page
//	           server wire, migration stream), detected by the server
//
// Layout: a 32-byte header (magic "STSEAL01", flags, chunk size, a
// random 16-byte nonce prefix), then chunks of a 16-byte header (stored
// length, plain length, flags, CRC32C of the plain data) and the stored
// bytes. An encrypted chunk's nonce is the prefix and the chunk's index;
// its additional data is the name of the file or stream, the header, the
// index and the chunk header, so a chunk cannot be altered, moved,
// dropped, or taken from another file; the last chunk is flagged, so a
// truncation is seen.
package seal
