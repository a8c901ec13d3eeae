// Package images owns the on-disk format of a dump: the image directory
// and criu's framing of every image file in it. It is the only package
// that reads or writes image bytes; everyone else deals in the go-criu
// generated messages (github.com/checkpoint-restore/go-criu/v8/crit/images/...).
//
// Format (criu/image.c, docs/image-format.md): little-endian; a header of
// IMG_COMMON_MAGIC (IMG_SERVICE_MAGIC for stats-dump, stats-restore,
// irmap-cache) and the type magic, or INVENTORY_MAGIC alone for
// inventory.img; then entries, each a u32 size and that many bytes of
// proto2, some followed by an extra raw blob whose length the entry gives
// (pipe data, socket queues, ghost file content, ipc data). pages-N.img
// and a few others are raw: no header at all.
//
// The file name decides the kind (magic and message type), as in criu's
// image-desc.c. Decoders never trust a length: an entry is refused if its
// size exceeds MaxEntrySize or what is left in the file, before anything
// is allocated; when the length of a stream is unknown, buffers grow with
// the data that actually arrives. Every decoding failure is an *Error
// naming the file and the offset and wrapping ErrTruncated, ErrCorrupt or
// ErrBadMagic.
//
// Writers produce name.tmp and rename it on Close, and check what callers
// write: message types, proto2 required fields, single-entry images, the
// length of extra data. WriteParallel (parallel.go) writes many
// single-entry images at once (a core image per thread).
//
// Threads: Dir is a path and may be shared; a Reader or Writer belongs to
// one goroutine at a time.
package images
