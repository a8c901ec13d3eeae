// Package pagesrv is criu's page server protocol, both ends: a dump (or
// pre-dump) sends the pagemaps and pages of its processes over TCP to a
// page server, which writes them into its images dir, so that the pages
// of a migration go straight to the destination.
//
//	proto.go   the wire format: 32-byte page_server_iov commands
//	           (OPEN2, PARENT, ADD_F, CLOSE, ...) and their encoding
//	client.go  Client: the dump's side (dump.PageServer), one Xfer per
//	           pagemap
//	server.go  Serve: one session into an images dir (criu page-server)
//	lazy.go    lazy pages (PS_IOV_GET): ServeLazy, the page server of a
//	           lazy dump (or of page-server --lazy-pages), and
//	           LazyClient, the lazy-pages daemon's side
//
// A Client is used by one goroutine at a time (the dump's tracer
// thread and its page copy, which hand over through mem.SavePlan). The
// wire format is criu 4.2's (criu/page-xfer.c), so that a stasis dump
// talks to a criu page server and a criu dump to a stasis one.
package pagesrv
