package mem

import (
	"errors"
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ErrUnsupportedVMA is wrapped by errors about mappings stasis cannot
// checkpoint yet. It wraps linux.ErrNotSupported, stasis' one "not
// supported".
var ErrUnsupportedVMA = fmt.Errorf("mapping %w", linux.ErrNotSupported)

// ErrTruncatedPages is wrapped when a pages image is shorter than its
// pagemap says.
var ErrTruncatedPages = fmt.Errorf("pages image truncated")

// ErrNoParent is wrapped when a pagemap entry is in the parent images
// (criu dump --prev-images-dir) but there is no parent images dir, or it
// does not have the pages (parent.go).
var ErrNoParent = errors.New("pages not in the parent images")

// ErrLazyPages is wrapped when a pagemap entry's pages are neither in the
// images nor in a parent: a --lazy-pages dump, whose pages its page
// server sends to the lazy-pages daemon of a restore --lazy-pages.
var ErrLazyPages = errors.New("lazy pages: in no image, only the lazy dump's page server has them")
