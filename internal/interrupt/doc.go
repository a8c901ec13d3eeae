// Package interrupt turns a signal or a canceled context into an error that
// the dump and restore orchestrators return at their safe points, so that
// the ordinary failure path rolls back (the rollback runs on the tracer
// thread, which alone may touch the tracees). It also holds the test-only
// hook that makes stasis signal itself at a named point.
//
// Thread rules: none. Check and At may be called from any goroutine.
package interrupt
