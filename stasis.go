// Package stasis checkpoints a running Linux process tree into a directory
// of CRIU-format image files and restores it later with the same PIDs,
// memory, registers and open files. It is the library behind the stasis
// command; the command is a thin layer over Dump, Restore and Check.
package stasis

import "log/slog"

// DumpOptions selects what Dump checkpoints and what happens to the tree
// afterwards. Field names follow criu's long flag names.
type DumpOptions struct {
	Pid          int    // -t/--tree: root of the tree to dump
	ImagesDir    string // -D/--images-dir: created if missing, must not hold a dump
	WorkDir      string // -W/--work-dir: logs and stats; defaults to ImagesDir
	LeaveRunning bool   // -R: the tree continues untouched after the dump
	LeaveStopped bool   // -s: the tree is left stopped (SIGSTOP) after the dump
	Log          *slog.Logger
}

// RestoreOptions selects how Restore brings an image directory back.
type RestoreOptions struct {
	ImagesDir string // -D/--images-dir
	WorkDir   string // -W/--work-dir
	PidFile   string // --pidfile: written with the (host) PID of the restored root
	Log       *slog.Logger
}
