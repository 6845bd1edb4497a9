// Package intern keeps the strings a codec decodes from one connection's
// frames, so that routing metadata, which repeats from request to request
// (interface, method, header and attachment keys, most of their values),
// costs no allocation in the steady state.
package intern

const (
	// Max is the size of each generation of the table.
	Max = 64
	// MaxLen keeps long, usually unique values (tokens, trace ids, payload
	// like attachments) out of the table.
	MaxLen = 96
	// recent is how many strings of the previous frame are remembered by
	// position.
	recent = 32
)

// Table is one connection's string table; the zero value is ready, and
// costs nothing until its first string, since most of the connections of a
// large proxy are idle. Not safe for concurrent use: a codec belongs to one
// connection.
//
// Two generations: when the current one is full it becomes the old one,
// and strings still in use move back on their next hit, so values that
// change on every request cannot evict the ones that do not.
//
// Before the map, a frame's n-th string is compared with the n-th string
// of the frame before: clients send the same keys in the same order, so
// most lookups end there with a length check and a memory compare, without
// hashing.
type Table struct {
	strs, old map[string]string
	prev      *[recent]string
	pos       int
}

// Frame starts a frame: the next String is compared with the previous
// frame's first.
func (t *Table) Frame() { t.pos = 0 }

// String returns a string equal to b, reusing one made for an earlier
// frame when it can.
func (t *Table) String(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > MaxLen {
		return string(b)
	}
	if t.strs == nil {
		// No size hint, and no old generation until the first is full: a
		// connection that made a few requests and went idle keeps a table
		// the size of what it saw.
		t.strs = map[string]string{}
		t.prev = new([recent]string)
	}
	i := t.pos
	if i < recent {
		t.pos++
		if s := t.prev[i]; s == string(b) {
			return s
		}
	}
	s := t.lookup(b)
	if i < recent {
		t.prev[i] = s
	}
	return s
}

func (t *Table) lookup(b []byte) string {
	if s, ok := t.strs[string(b)]; ok {
		return s
	}
	s, ok := t.old[string(b)]
	if !ok {
		s = string(b)
	}
	if len(t.strs) >= Max {
		if t.old == nil {
			t.old, t.strs = t.strs, make(map[string]string, Max)
		} else {
			t.strs, t.old = t.old, t.strs
			clear(t.strs)
		}
	}
	t.strs[s] = s
	return s
}
