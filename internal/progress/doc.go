// Package progress counts the bytes of a dump's page copy and of a
// restore's page fill, so that the command line can show how far it is.
// The engine adds to a Meter that the caller put in the operation's
// context; without one, every method is a no-op. Safe for concurrent use:
// the copy's workers add while the caller reads.
package progress
