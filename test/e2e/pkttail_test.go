package e2e

import "testing"

// TestPacketTail: packet sockets with memory-mapped rings (TPACKET_V2 rx,
// rx and tx in one mapping, TPACKET_V3) and a SOCK_PACKET socket, all on
// lo (pkttail.c).
func TestPacketTail(t *testing.T) {
	runTail(t, "pkttail", []tailCase{
		{scenario: "rx-v2"},
		{scenario: "rx-fork"},
		{scenario: "txrx-v2"},
		{scenario: "rx-v3"},
		{scenario: "spkt"},
		// criu 4.2 refuses it too ("Mmap-ed socket ... not open").
		{scenario: "ring-closed", refused: "which no fd of the tree holds"},
	})
}
