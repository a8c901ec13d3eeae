package puppet

import "errors"

// ErrNotMainThread: Split was called from another thread than the main
// one, whose exec alone the restorer can catch.
var ErrNotMainThread = errors.New("not on the main thread")

// ErrSplitUsed: the process that split is the puppet of one restore
// only.
var ErrSplitUsed = errors.New("split process already used")
