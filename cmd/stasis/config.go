package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// configCommands are the commands criu's configuration files apply to on
// the command line (swrk and service read them per request, rpc package).
var configCommands = []string{"dump", "pre-dump", "restore", "check", "page-server", "lazy-pages", "dedup", "cpuinfo"}

// withConfig puts the options of criu's configuration files before the
// command's own, so that those on the command line win, as in criu:
// default files unless --no-default-config, $CRIU_CONFIG_FILE, --config.
func withConfig(args []string) ([]string, error) {
	if len(args) == 0 || !slices.Contains(configCommands, args[0]) {
		return args, nil
	}
	explicit, noDefault := "", false
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		switch {
		case a == "--no-default-config":
			noDefault = true
		case a == "--config" && i+1 < len(args):
			explicit = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			explicit = strings.TrimPrefix(a, "--config=")
		}
	}
	opts, err := stasis.LoadConfig(explicit, noDefault)
	if err != nil {
		return nil, err
	}
	var conf []string
	for _, o := range opts {
		if o.Name == "config" || o.Name == "no-default-config" {
			return nil, fmt.Errorf("%s:%d: %s cannot be set in a configuration file", o.File, o.Line, o.Name)
		}
		if !o.HasArg {
			conf = append(conf, "--"+o.Name)
			continue
		}
		// An optional argument only goes with its option as --name=value.
		if lookupCRIUOpt(o.Name).arg == optionalArg {
			conf = append(conf, "--"+o.Name+"="+o.Arg)
			continue
		}
		conf = append(conf, "--"+o.Name, o.Arg)
	}
	if len(conf) == 0 {
		return args, nil
	}
	out := append([]string{args[0]}, conf...)
	return append(out, args[1:]...), nil
}

// addConfigFlags registers --config and --no-default-config, which
// withConfig has already acted on.
func addConfigFlags(f *pflag.FlagSet) {
	if f.Lookup("config") == nil {
		f.String("config", "", "read criu options from FILE (after the default configuration files)")
	}
	if f.Lookup("no-default-config") == nil {
		f.Bool("no-default-config", false, "do not read /etc/criu/default.conf and $HOME/.criu/default.conf")
	}
}
