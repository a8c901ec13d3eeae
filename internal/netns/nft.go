package netns

import (
	"fmt"
	"strings"

	"github.com/google/nftables"

	"github.com/stasis-cr/stasis/internal/images"
)

// nftables ruleset of the namespace (criu: nftables-ID.img, the text of
// `nft list ruleset`). Not kept yet: a namespace with a table of its own
// is refused at dump, naming the table, rather than losing it.

func dumpNftables(dir *images.Dir, id uint32) error {
	nft, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := nft.ListTables()
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	var names []string
	for _, t := range tables {
		if isLockTable(t.Name) {
			continue
		}
		names = append(names, t.Name)
	}
	if len(names) > 0 {
		return fmt.Errorf("nftables tables %s: keeping a namespace's ruleset is %w yet", strings.Join(names, ", "), ErrNotSupported)
	}
	return nil
}

// isLockTable tells the network lock's tables (stasis' and criu's),
// which are no part of the namespace's ruleset.
func isLockTable(name string) bool {
	return strings.HasPrefix(name, "CRIU-") || strings.HasPrefix(name, "stasis-")
}

func readNftables(dir *images.Dir, id uint32) ([]byte, error) { return nil, nil }

func restoreNftables(b []byte, id uint32) error { return nil }
