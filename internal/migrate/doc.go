// Package migrate is the stream between the two ends of `stasis migrate`:
// the source sends the images dirs of its pre-copy rounds and of the final
// dump as they are made, and asks the target to restore the last one; the
// target (`stasis migrate-receive`, in a network namespace, over ssh or
// TCP) writes them into its own images dir and answers. The final restore
// is announced (Prepare) as soon as its images are there: the target
// starts it, and it reads them while the source lets go of the tree; the
// Restore frame then lets it go on.
//
//	proto.go    the frames: a type, a name, a length, the bytes
//	send.go     Sender: SendDir (one dir, its files and symlinks), Lock,
//	            Prepare, Restore, End
//	receive.go  Receive: the target's loop, writing only under its root
//
// The stream is sealed (internal/seal) when the source asks for
// --compress or --encrypt; Receive detects it.
package migrate
