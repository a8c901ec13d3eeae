package main

import "runtime"

// The main goroutine keeps the main thread: a sibling restore makes this
// process the puppet by an exec that the restorer it started catches on
// the main thread only (stasis.SplitSibling), and restore and swrk call
// it from the main goroutine.
func init() { runtime.LockOSThread() }
