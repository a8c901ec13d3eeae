// Package stats writes the statistics of a dump (stats-dump) and of a
// restore (stats-restore) into the work dir, in criu's format (criu's
// stats.c), where podman and checkpointctl read them.
package stats
