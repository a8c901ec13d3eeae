// Package rpc serves criu's RPC (images/rpc.proto, go-criu's rpc types)
// so that go-criu, runc and libcriu users can drive stasis unchanged: the
// `criu swrk FD` protocol over an inherited SOCK_SEQPACKET socket, and
// `criu service`, which listens on a unix socket and serves each
// connection the same way.
//
// The wire is criu's: one protobuf criu_req or criu_resp per packet, no
// length prefix; fd numbers in the options are the client's (the peer of
// the socket, SO_PEERCRED), opened through /proc/PEER/fd, except
// inherit_fd, which are the server's own. One request per process, as in
// criu, but for VERSION and FEATURE_CHECK with keep_open.
//
// Parts:
//   - server.go: the request loop, the reply helpers, the Backend the
//     root package fills in (this package cannot import it);
//   - conn.go: the socket (framing, peer, bounds);
//   - version.go, features.go, dump.go, restore.go, waitpid.go,
//     cpuinfo.go (CPUINFO_DUMP/CHECK and cpu_cap): one file per request
//     type; unsupported.go: the types stasis refuses;
//   - opts.go: criu_opts to stasis options, and the options refused;
//   - errno.go: cr_errno as criu 4.2 sets it;
//   - notify.go: the notify callbacks (criu's action scripts);
//     orphanpts.go: orphan_pts_master, the notification that carries an
//     fd (SCM_RIGHTS);
//   - service.go: `service [--address SOCK] [--daemon] [--pidfile F]`.
//
// Thread rules: a request runs on the goroutine that called Serve; the
// notify callbacks run on the dump's or restore's tracer thread and use
// the socket from there, one exchange at a time.
package rpc
