package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// pgConn is the least of a PostgreSQL client (protocol 3, trust
// authentication, simple queries): enough for a test to keep a
// connection to a server across a checkpoint and query it.
type pgConn struct {
	c  net.Conn
	br *bufio.Reader
}

func pgConnect(addr, user, db string) (*pgConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	p := &pgConn{c: c, br: bufio.NewReader(c)}
	body := binary.BigEndian.AppendUint32(nil, 3<<16) // protocol 3.0
	for _, kv := range []string{"user", user, "database", db} {
		body = append(append(body, kv...), 0)
	}
	body = append(body, 0)
	msg := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
	if _, err := c.Write(append(msg, body...)); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := p.results(); err != nil {
		c.Close()
		return nil, fmt.Errorf("startup: %w", err)
	}
	return p, nil
}

// query runs sql (one or more statements) and returns the rows of the
// last statement that returned any, each column as text ("" for NULL).
func (p *pgConn) query(sql string) ([][]string, error) {
	msg := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, uint32(4+len(sql)+1))...)
	msg = append(append(msg, sql...), 0)
	if err := p.c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := p.c.Write(msg); err != nil {
		return nil, err
	}
	return p.results()
}

// results reads messages up to ReadyForQuery.
func (p *pgConn) results() ([][]string, error) {
	var rows, cur [][]string
	var qerr error
	for {
		typ, body, err := p.message()
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'T': // RowDescription: a new result set
			cur = [][]string{}
		case 'D':
			row, err := pgDataRow(body)
			if err != nil {
				return nil, err
			}
			cur = append(cur, row)
		case 'C':
			if cur != nil {
				rows, cur = cur, nil
			}
		case 'E':
			qerr = errors.New(pgError(body))
		case 'R':
			if len(body) < 4 || binary.BigEndian.Uint32(body) != 0 {
				return nil, fmt.Errorf("the server asks for authentication (%x): not trust", body)
			}
		case 'Z':
			return rows, qerr
		}
	}
}

func (p *pgConn) message() (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n < 4 || n > 64<<20 {
		return 0, nil, fmt.Errorf("message %q of %d bytes", h[0], n)
	}
	body := make([]byte, n-4)
	_, err := io.ReadFull(p.br, body)
	return h[0], body, err
}

func pgDataRow(b []byte) ([]string, error) {
	if len(b) < 2 {
		return nil, errors.New("short DataRow")
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	row := make([]string, n)
	for i := range row {
		if len(b) < 4 {
			return nil, errors.New("short DataRow")
		}
		l := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if l < 0 {
			continue
		}
		if int(l) > len(b) {
			return nil, errors.New("short DataRow")
		}
		row[i], b = string(b[:l]), b[l:]
	}
	return row, nil
}

// pgError renders an ErrorResponse: severity, code and message.
func pgError(b []byte) string {
	var parts []string
	for len(b) > 1 {
		k := b[0]
		end := strings.IndexByte(string(b[1:]), 0)
		if end < 0 {
			break
		}
		if v := string(b[1 : 1+end]); k == 'S' || k == 'C' || k == 'M' {
			parts = append(parts, v)
		}
		b = b[2+end:]
	}
	return strings.Join(parts, " ")
}

func (p *pgConn) close() {
	p.c.Write([]byte{'X', 0, 0, 0, 4})
	p.c.Close()
}
