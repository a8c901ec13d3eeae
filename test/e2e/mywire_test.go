package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// myConn is the least of a MySQL/MariaDB client (protocol 41, a user
// without a password, text queries one statement at a time): enough for
// a test to keep a connection to a server across a checkpoint and query
// it, with no driver module and no pool between the test and its socket.
type myConn struct {
	c   net.Conn
	br  *bufio.Reader
	seq byte
	// ID is the connection id the server's handshake announced, which
	// CONNECTION_ID() returns on this connection.
	ID uint32
}

// Capability flags (include/mysql_com.h).
const (
	myClientLongPassword   = 1 << 0 // CLIENT_MYSQL to MariaDB
	myClientLongFlag       = 1 << 2
	myClientProtocol41     = 1 << 9
	myClientTransactions   = 1 << 13
	myClientSecureConn     = 1 << 15
	myClientMultiResults   = 1 << 17
	myClientPluginAuth     = 1 << 19
	myMaxPacket            = 1 << 24
	myCharsetUTF8MB4       = 45 // utf8mb4_general_ci
	myComQuery             = 3
	myComQuit              = 1
	myNativePasswordPlugin = "mysql_native_password"
)

func myConnect(addr, user string) (*myConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	m := &myConn{c: c, br: bufio.NewReader(c)}
	if err := m.handshake(user); err != nil {
		c.Close()
		return nil, fmt.Errorf("mysql handshake with %s: %w", addr, err)
	}
	return m, nil
}

func (m *myConn) handshake(user string) error {
	m.c.SetDeadline(time.Now().Add(30 * time.Second))
	p, err := m.readPacket()
	if err != nil {
		return err
	}
	if len(p) > 0 && p[0] == 0xff {
		return errors.New(myError(p))
	}
	if len(p) < 1 || p[0] != 10 {
		return fmt.Errorf("handshake packet of protocol %x, want 10", p[:min(1, len(p))])
	}
	rest, _, ok := cutNUL(p[1:]) // server version
	if !ok || len(rest) < 4 {
		return errors.New("short handshake packet")
	}
	m.ID = binary.LittleEndian.Uint32(rest)
	resp := binary.LittleEndian.AppendUint32(nil, myClientLongPassword|myClientLongFlag|myClientProtocol41|
		myClientTransactions|myClientSecureConn|myClientMultiResults|myClientPluginAuth)
	resp = binary.LittleEndian.AppendUint32(resp, myMaxPacket)
	resp = append(resp, myCharsetUTF8MB4)
	resp = append(resp, make([]byte, 23)...)
	resp = append(append(resp, user...), 0)
	resp = append(resp, 0) // no password: an empty auth response
	resp = append(append(resp, myNativePasswordPlugin...), 0)
	if err := m.writePacket(resp); err != nil {
		return err
	}
	for {
		p, err := m.readPacket()
		if err != nil {
			return err
		}
		switch {
		case len(p) > 0 && p[0] == 0x00:
			return nil
		case len(p) > 0 && p[0] == 0xff:
			return errors.New(myError(p))
		case len(p) > 0 && p[0] == 0xfe:
			// An auth switch: the empty password is empty in any plugin.
			if err := m.writePacket(nil); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected packet %x in the authentication", p[:min(8, len(p))])
		}
	}
}

// query runs one statement and returns its rows, each column as text
// ("" for NULL); a statement without a result set returns none.
func (m *myConn) query(sql string) ([][]string, error) {
	if err := m.c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		return nil, err
	}
	m.seq = 0
	if err := m.writePacket(append([]byte{myComQuery}, sql...)); err != nil {
		return nil, fmt.Errorf("%.60s: send: %w", sql, err)
	}
	rows, err := m.results()
	if err != nil {
		return nil, fmt.Errorf("%.60s: %w", sql, err)
	}
	return rows, nil
}

func (m *myConn) results() ([][]string, error) {
	p, err := m.readPacket()
	if err != nil {
		return nil, err
	}
	switch {
	case len(p) == 0:
		return nil, errors.New("empty reply")
	case p[0] == 0x00:
		return nil, nil // OK
	case p[0] == 0xff:
		return nil, errors.New(myError(p))
	}
	ncol, _, ok := lenencInt(p)
	if !ok || ncol == 0 || ncol > 4096 {
		return nil, fmt.Errorf("bad column count packet %x", p[:min(9, len(p))])
	}
	for i := uint64(0); i < ncol; i++ { // column definitions
		if _, err := m.readPacket(); err != nil {
			return nil, err
		}
	}
	if p, err := m.readPacket(); err != nil || !isEOF(p) {
		return nil, fmt.Errorf("no EOF after the column definitions (%x): %v", p[:min(9, len(p))], err)
	}
	rows := [][]string{}
	for {
		p, err := m.readPacket()
		if err != nil {
			return nil, err
		}
		if isEOF(p) {
			return rows, nil
		}
		if len(p) > 0 && p[0] == 0xff {
			return nil, errors.New(myError(p))
		}
		row := make([]string, ncol)
		for i := range row {
			if len(p) > 0 && p[0] == 0xfb { // NULL
				p = p[1:]
				continue
			}
			n, k, ok := lenencInt(p)
			if !ok || uint64(len(p)-k) < n {
				return nil, errors.New("short row packet")
			}
			row[i], p = string(p[k:k+int(n)]), p[k+int(n):]
		}
		rows = append(rows, row)
	}
}

func isEOF(p []byte) bool { return len(p) > 0 && len(p) < 9 && p[0] == 0xfe }

// lenencInt decodes a length-encoded integer: its value and length.
func lenencInt(p []byte) (uint64, int, bool) {
	if len(p) == 0 {
		return 0, 0, false
	}
	size := map[byte]int{0xfc: 2, 0xfd: 3, 0xfe: 8}[p[0]]
	if size == 0 {
		return uint64(p[0]), 1, p[0] < 0xfb
	}
	if len(p) < 1+size {
		return 0, 0, false
	}
	var b [8]byte
	copy(b[:], p[1:1+size])
	return binary.LittleEndian.Uint64(b[:]), 1 + size, true
}

func cutNUL(p []byte) (rest, s []byte, ok bool) {
	for i, b := range p {
		if b == 0 {
			return p[i+1:], p[:i], true
		}
	}
	return nil, nil, false
}

// myError renders an ERR packet: code, SQL state and message.
func myError(p []byte) string {
	if len(p) < 3 {
		return "ERR packet"
	}
	code, msg := binary.LittleEndian.Uint16(p[1:]), p[3:]
	state := ""
	if len(msg) >= 6 && msg[0] == '#' {
		state, msg = string(msg[1:6]), msg[6:]
	}
	return fmt.Sprintf("error %d (%s): %s", code, state, msg)
}

func (m *myConn) readPacket() ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(m.br, h[:]); err != nil {
		return nil, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	m.seq = h[3] + 1
	if n == myMaxPacket-1 {
		return nil, errors.New("a packet of 16 MiB or more: not handled by this client")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(m.br, p)
	return p, err
}

func (m *myConn) writePacket(p []byte) error {
	h := []byte{byte(len(p)), byte(len(p) >> 8), byte(len(p) >> 16), m.seq}
	m.seq++
	_, err := m.c.Write(append(h, p...))
	return err
}

func (m *myConn) close() {
	m.seq = 0
	m.writePacket([]byte{myComQuit})
	m.c.Close()
}
