// Package criuconf reads criu's configuration files (criu(8),
// CONFIGURATION FILES): /etc/criu/default.conf, $HOME/.criu/default.conf,
// $CRIU_CONFIG_FILE, `--config FILE` and the RPC's config_file (runc sends
// /etc/criu/runc.conf). A file is one long option a line, without its
// "--", followed by its argument; '#' starts a comment; an argument with
// blanks is written in double quotes, in which \" is a quote.
//
// conf.go parses; the command line (cmd/stasis, through the root
// package's ConfigArgs) turns options into arguments placed before its
// own, and the RPC (internal/rpc/config.go) into criu_opts fields, with
// criu's precedence.
package criuconf
