package netlock

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Mode is criu's --network-lock: how the connections are locked.
type Mode string

const (
	// Nftables locks with a table of stasis' own (the default).
	Nftables Mode = "nftables"
	// Skip does not lock: the user keeps the peers quiet some other way.
	Skip Mode = "skip"
)

// ParseMode parses --network-lock; "" is the default, nftables.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", Nftables:
		return Nftables, nil
	case Skip:
		return Skip, nil
	case "iptables":
		return "", fmt.Errorf("--network-lock iptables: stasis locks with nftables only (through netlink, no binary needed); use --network-lock nftables, or skip")
	}
	return "", fmt.Errorf("--network-lock %q: want nftables or skip", s)
}

// Conn is one TCP connection, seen from the tree's side.
type Conn struct {
	Local, Remote netip.AddrPort
}

func (c Conn) String() string { return c.Local.String() + " -> " + c.Remote.String() }

// TableName is the name of the persistent lock of the tree whose root
// has pid (its pid in the images): "inet stasis-PID".
func TableName(pid int) string { return fmt.Sprintf("stasis-%d", pid) }

// CRIUTableName is the name of the persistent nftables lock of the dump
// whose inventory has runID (dump_criu_run_id), as criu names it: "inet
// CRIU-ID", cut to 31 characters with the family. stasis names its own
// the same way (its run ids are "stasis-PID-RANDOM", RunID), so that
// criu's restore of stasis' images removes it, and the reverse.
func CRIUTableName(runID string) string {
	name := "CRIU-" + runID
	return name[:min(len(name), 31-len("inet "))]
}

// RunID makes the run id of a dump of the tree whose root has pid: it
// names the dump's persistent lock (CRIUTableName) and keeps the pid in
// that name, so that a user (and a test) tells whose lock it is.
func RunID(pid int) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("stasis-%d-%x", pid, b)
}

// InventoryMethod is the network_lock_method of inventory.img for a
// mode: criu's own enum (0 iptables, 1 nftables, 2 skip), which tells
// criu's restore which lock to remove.
func InventoryMethod(m Mode) uint32 {
	if m == Skip {
		return 2
	}
	return 1
}

// Lock is the lock of one tree's connections, held by this stasis.
// The zero of a skipped lock is a nil *Lock, whose methods do nothing.
type Lock struct {
	pid   int
	runID string // names the persistent table; "" for stasis-PID
	// foreign are persistent locks of other names that Unlock removes
	// too: criu's, when the images are criu's.
	foreign []string
	log     *slog.Logger
	nft     *nftables.Conn // lasting: its socket owns the table
	table   *ruleset       // the table owned by this stasis, once a connection is locked
	conns   []Conn
	// persisted: the connections are in the persistent table, and the
	// owned one is gone.
	persisted bool
	// nsPid: the lock is in the network namespace of this process (the
	// tree's own, netns.go), 0 for stasis'.
	nsPid int
}

// New returns the lock of the tree whose root has pid, in stasis'
// network namespace, or nil for mode Skip. Nothing is locked (and no
// netlink socket opened) before the first Add.
func New(mode Mode, pid int, log *slog.Logger) *Lock {
	if mode == Skip {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Lock{pid: pid, log: log}
}

// SetRunID names the persistent table after the dump's run id
// (CRIUTableName) instead of the pid.
func (l *Lock) SetRunID(id string) {
	if l != nil {
		l.runID = id
	}
}

// persistentName is the name of the table Persist makes.
func (l *Lock) persistentName() string {
	if l.runID != "" {
		return CRIUTableName(l.runID)
	}
	return TableName(l.pid)
}

// Add drops the packets of c from now on.
func (l *Lock) Add(c Conn) error {
	if l == nil {
		return nil
	}
	if l.persisted {
		return fmt.Errorf("network lock of pid %d: connection %s added after the lock was made persistent", l.pid, c)
	}
	if l.table == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	if err := l.table.add(l.nft, c); err != nil {
		return fmt.Errorf("network lock %s: lock connection %s: %w", l.table.name, c, err)
	}
	l.conns = append(l.conns, c)
	l.log.Debug("connection locked", "conn", c.String(), "table", l.table.name)
	return nil
}

// open creates the table this stasis owns: the kernel deletes it with
// the netlink socket, that is when stasis exits, whatever the way.
func (l *Lock) open() error {
	name := fmt.Sprintf("%s-by-%d", TableName(l.pid), os.Getpid())
	owner, err := dialOwner(l.nsPid)
	if err != nil {
		return fmt.Errorf("network lock %s: %w", name, err)
	}
	t := newRuleset(name)
	if err := createOwnedTable(owner.nl, name); err != nil {
		owner.nft.CloseLasting()
		return fmt.Errorf("network lock %s: %w (--network-lock skip goes without the lock)", name, err)
	}
	err = t.build(owner.nft, nil)
	if err == nil {
		err = owner.nft.Flush()
	}
	if err != nil {
		owner.nft.CloseLasting()
		return fmt.Errorf("network lock %s: create its sets and chains: %w", name, err)
	}
	l.nft, l.table = owner.nft, t
	return nil
}

// Persist makes the lock outlive stasis: the table "CRIU-RUNID" takes
// the place of the owned one in one transaction, so that no packet gets
// through in between. A lock left there by an earlier dump of the same
// pid is replaced. Without connections, there is nothing to keep.
func (l *Lock) Persist() error {
	if l == nil || l.table == nil || l.persisted {
		return nil
	}
	p := newRuleset(l.persistentName())
	err := p.replace(l.nft, l.conns)
	if err == nil {
		l.nft.DelTable(l.table.table)
		err = l.nft.Flush()
	}
	if err != nil {
		return fmt.Errorf("network lock: make it persistent as table inet %s: %w", p.name, err)
	}
	l.persisted = true
	l.log.Info("network locked until the restore", "table", "inet "+p.name, "connections", len(l.conns))
	return l.close()
}

// Release lets the connections' packets through again, unless Persist
// made the lock outlive stasis. It is called once the tree runs again
// (its sockets out of repair mode) or is gone.
func (l *Lock) Release() error {
	if l == nil || l.nft == nil {
		return nil
	}
	l.nft.DelTable(l.table.table)
	err := l.nft.Flush()
	if err != nil {
		err = fmt.Errorf("network lock: delete table inet %s: %w (it goes with stasis anyway)", l.table.name, err)
	}
	if l.conns != nil {
		l.log.Info("network unlocked", "connections", len(l.conns))
	}
	return errors.Join(err, l.close())
}

func (l *Lock) close() error {
	err := l.nft.CloseLasting()
	l.nft = nil
	return err
}

// Unlock deletes the persistent lock of the tree whose root had pid, if
// there is one: the restore calls it once the restored connections run,
// or once it has failed (their peers should get resets then).
func Unlock(pid int) error { return unlockTables(0, TableName(pid)) }

// UnlockRun deletes the persistent lock of the dump whose run id is runID
// (criu's or stasis'), if there is one, in stasis' network namespace.
func UnlockRun(runID string) error { return unlockTables(0, CRIUTableName(runID)) }

// unlockTables deletes the inet tables of these names that exist, in the
// network namespace of process nsPid (0: stasis').
func unlockTables(nsPid int, names ...string) error {
	name := strings.Join(names, ", ")
	opts, done, err := inNetNS(nsPid)
	if err != nil {
		return fmt.Errorf("network unlock %s: %w", name, err)
	}
	defer done()
	nft, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("network unlock %s: %w", name, err)
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("network unlock: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if slices.Contains(names, t.Name) {
			nft.DelTable(t)
			if err := nft.Flush(); err != nil {
				return fmt.Errorf("network unlock: delete table inet %s: %w", t.Name, err)
			}
		}
	}
	return nil
}

// Tables lists the lock tables of this network namespace (persistent and
// held by a running stasis), for tests and diagnostics.
func Tables(nft *nftables.Conn) ([]string, error) {
	if nft == nil {
		var err error
		if nft, err = nftables.New(); err != nil {
			return nil, err
		}
	}
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	var names []string
	for _, t := range tables {
		if isLockTable(t.Name) {
			names = append(names, t.Name)
		}
	}
	return names, nil
}
