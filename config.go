package stasis

import "github.com/stasis-cr/stasis/internal/criuconf"

// ConfigOption is one option of a criu configuration file: a long option
// name without "--" and its argument.
type ConfigOption = criuconf.Option

// LoadConfig reads criu's configuration files in criu's order (criu(8),
// CONFIGURATION FILES): /etc/criu/default.conf and
// $HOME/.criu/default.conf unless noDefault, $CRIU_CONFIG_FILE, then
// explicit (--config) if set. Absent default files are skipped; an absent
// explicit file is an error. Options given on the command line come after
// these and override them.
func LoadConfig(explicit string, noDefault bool) ([]ConfigOption, error) {
	return criuconf.Load(explicit, noDefault)
}
