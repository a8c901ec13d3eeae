package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// logFlags are criu's -v[N] and -o FILE.
type logFlags struct {
	verbosity int
	file      string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.CountVarP(&l.verbosity, "verbosity", "v", "log verbosity: -v (errors) to -v4 (debug), as criu")
	fs.StringVarP(&l.file, "log-file", "o", "", "write the log to FILE (relative to the work dir, as criu)")
}

// path is where the log file is, "" if there is none.
func (l *logFlags) path(workDir string) string {
	if l.file == "" || workDir == "" || l.file[0] == '/' {
		return l.file
	}
	return workDir + "/" + l.file
}

// open returns a logger and a closer. criu's levels: 0 none, 1 errors,
// 2 warnings (default), 3 info, 4 debug.
func (l *logFlags) open(workDir string) (*slog.Logger, func(), error) {
	level := slog.LevelWarn
	switch {
	case l.verbosity >= 4:
		level = slog.LevelDebug
	case l.verbosity == 3:
		level = slog.LevelInfo
	case l.verbosity == 1:
		level = slog.LevelError
	}
	var w io.Writer = os.Stderr
	closer := func() {}
	if l.file != "" {
		path := l.file
		if workDir != "" && path[0] != '/' {
			path = workDir + "/" + path
			// The images dir may not exist yet: dump creates it, 0700
			// like the images, since the log quotes paths and errors.
			_ = os.MkdirAll(workDir, 0o700)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open log file: %w", err)
		}
		w = f
		closer = func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closer, nil
}

// quiet is criu's -v0: nothing but errors is printed, not even progress.
func (l *logFlags) quiet(cmd *cobra.Command) bool {
	return l.verbosity == 0 && cmd.Flags().Changed("verbosity")
}
