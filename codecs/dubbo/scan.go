package dubbo

import (
	"encoding/binary"

	"github.com/breeze-mesh/breeze/codecs"
)

// scanner finds where hessian2 values end without building them.
//
// dubbo-go-hessian2 has no skip: its Decoder materialises every value (its
// "skip" mode still decodes each field of an unknown class), and it sizes a
// fixed-length list from the wire before reading a single element, so a
// ten-byte argument can make it allocate gigabytes. The proxy never needs
// the call arguments, so it walks over them with this scanner, which only
// reads lengths and never allocates (except to remember class definitions).
// Values the proxy does use (strings of the request header, attachments) are
// located here and, when not plain ASCII, decoded by dubbo-go-hessian2.
type scanner struct {
	b []byte
	// defs holds the field count of each class definition ('C') met so
	// far, in order: an object instance ('O', 0x60-0x6f) names its class
	// by that index and is followed by that many values. unknownClass
	// marks definitions known to exist but not scanned (see mergeAttachments).
	defs  []int
	depth int
}

const (
	// maxDepth bounds nesting so that a hostile frame made of nothing but
	// list openers cannot exhaust the goroutine stack (a fatal error, not
	// a recoverable panic). Real object graphs are far shallower.
	maxDepth = 512
	// unknownClass is the field count recorded for a class defined before
	// the scanned part of the body.
	unknownClass = -1
)

// errUnknownClass reports an object whose class was defined before the
// scanned part of the body; the caller rescans from the start.
var errUnknownClass = &codecs.ProtocolError{Reason: reasonBadBody, Detail: "object of a class defined before the scanned part"}

func (s *scanner) reset(b []byte) {
	s.b = b
	if cap(s.defs) > 1024 {
		// Do not keep a hostile frame's table alive for the connection's life.
		s.defs = nil
	}
	s.defs = s.defs[:0]
	s.depth = 0
}

func (s *scanner) truncated(off int) error {
	return codecs.Errorf(reasonBadBody, "hessian2 value truncated at body offset %d of %d", off, len(s.b))
}

func (s *scanner) invalid(off int, what string) error {
	return codecs.Errorf(reasonBadBody, "body offset %d: %s", off, what)
}

// need returns off+n if the body has n bytes at off.
func (s *scanner) need(off, n int) (int, error) {
	if n < 0 || off+n > len(s.b) {
		return 0, s.truncated(len(s.b))
	}
	return off + n, nil
}

// skip returns the offset just past the value at off.
func (s *scanner) skip(off int) (int, error) {
	if s.depth >= maxDepth {
		return 0, s.invalid(off, "values nested too deep")
	}
	s.depth++
	end, err := s.skipValue(off)
	s.depth--
	return end, err
}

func (s *scanner) skipValue(off int) (int, error) {
	b := s.b
	if off >= len(b) {
		return 0, s.truncated(off)
	}
	tag := b[off]
	switch {
	case tag <= 0x1f: // string, 0-31 chars
		return s.skipChars(off+1, int(tag))
	case tag <= 0x2f: // binary, 0-15 bytes
		return s.need(off+1, int(tag-0x20))
	case tag <= 0x33: // string, 0-1023 chars
		if off+1 >= len(b) {
			return 0, s.truncated(off)
		}
		return s.skipChars(off+2, int(tag-0x30)<<8|int(b[off+1]))
	case tag <= 0x37: // binary, 0-1023 bytes
		if off+1 >= len(b) {
			return 0, s.truncated(off)
		}
		return s.need(off+2, int(tag-0x34)<<8|int(b[off+1]))
	case tag <= 0x3f: // long, three octets
		return s.need(off+1, 2)
	case tag >= 0x60 && tag <= 0x6f: // object, class index in the tag
		return s.skipInstance(off, int(tag-0x60), off+1)
	case tag >= 0x70 && tag <= 0x77: // typed list, 0-7 elements
		p, err := s.skipType(off + 1)
		if err != nil {
			return 0, err
		}
		return s.skipN(p, int(tag-0x70))
	case tag >= 0x78 && tag <= 0x7f: // untyped list, 0-7 elements
		return s.skipN(off+1, int(tag-0x78))
	case tag >= 0x80 && tag <= 0xbf: // int, one octet
		return off + 1, nil
	case tag >= 0xc0 && tag <= 0xcf: // int, two octets
		return s.need(off+1, 1)
	case tag >= 0xd0 && tag <= 0xd7: // int, three octets
		return s.need(off+1, 2)
	case tag >= 0xd8 && tag <= 0xef: // long, one octet
		return off + 1, nil
	case tag >= 0xf0: // long, two octets
		return s.need(off+1, 1)
	}
	switch tag {
	case 'N', 'T', 'F', 0x5b, 0x5c: // null, true, false, double 0.0 and 1.0
		return off + 1, nil
	case 0x5d: // double as byte
		return s.need(off+1, 1)
	case 0x5e: // double as short
		return s.need(off+1, 2)
	case 'I', 'K', 'Y', 0x5f: // int, date in minutes, long as int, double as float
		return s.need(off+1, 4)
	case 'D', 'J', 'L': // double, date, long
		return s.need(off+1, 8)
	case 'A', 'B':
		return s.skipBinaryChunks(off)
	case 'R', 'S':
		return s.skipStringChunks(off)
	case 'C': // class definition, then the value it prefixes
		p, err := s.skipString(off + 1)
		if err != nil {
			return 0, err
		}
		n, p, err := s.readInt(p)
		if err != nil {
			return 0, err
		}
		if n < 0 {
			return 0, s.invalid(off, "class definition with a negative field count")
		}
		for i := 0; i < int(n); i++ {
			if p, err = s.skipString(p); err != nil {
				return 0, err
			}
		}
		s.defs = append(s.defs, int(n))
		return s.skip(p)
	case 'O': // object, class index as an int
		idx, p, err := s.readInt(off + 1)
		if err != nil {
			return 0, err
		}
		return s.skipInstance(off, int(idx), p)
	case 'Q': // reference to an earlier map, list or object
		_, p, err := s.readInt(off + 1)
		return p, err
	case 'H': // untyped map
		return s.skipPairs(off + 1)
	case 'M': // typed map
		p, err := s.skipType(off + 1)
		if err != nil {
			return 0, err
		}
		return s.skipPairs(p)
	case 'U': // typed list, variable length
		p, err := s.skipType(off + 1)
		if err != nil {
			return 0, err
		}
		return s.skipUntilEnd(p)
	case 'W': // untyped list, variable length
		return s.skipUntilEnd(off + 1)
	case 'V': // typed list, fixed length
		p, err := s.skipType(off + 1)
		if err != nil {
			return 0, err
		}
		n, p, err := s.readInt(p)
		if err != nil {
			return 0, err
		}
		return s.skipN(p, int(n))
	case 'X': // untyped list, fixed length
		n, p, err := s.readInt(off + 1)
		if err != nil {
			return 0, err
		}
		return s.skipN(p, int(n))
	}
	return 0, s.invalid(off, "not a hessian2 value")
}

// readInt reads a hessian2 int (lengths, class indexes, result types).
func (s *scanner) readInt(off int) (int32, int, error) {
	b := s.b
	if off >= len(b) {
		return 0, 0, s.truncated(off)
	}
	tag := b[off]
	switch {
	case tag >= 0x80 && tag <= 0xbf:
		return int32(tag) - 0x90, off + 1, nil
	case tag >= 0xc0 && tag <= 0xcf:
		if off+2 > len(b) {
			return 0, 0, s.truncated(off)
		}
		return (int32(tag)-0xc8)<<8 | int32(b[off+1]), off + 2, nil
	case tag >= 0xd0 && tag <= 0xd7:
		if off+3 > len(b) {
			return 0, 0, s.truncated(off)
		}
		return (int32(tag)-0xd4)<<16 | int32(b[off+1])<<8 | int32(b[off+2]), off + 3, nil
	case tag == 'I':
		if off+5 > len(b) {
			return 0, 0, s.truncated(off)
		}
		return int32(binary.BigEndian.Uint32(b[off+1:])), off + 5, nil
	}
	return 0, 0, s.invalid(off, "expected an int")
}

// skipChars skips n hessian2 characters (UTF-8 of UTF-16 units: one to
// three bytes each, as Java's Hessian2Output and dubbo-go-hessian2 write them).
func (s *scanner) skipChars(off, n int) (int, error) {
	b := s.b
	// A run of ASCII is the common case: check it eight bytes at a time.
	if off+n <= len(b) && isASCII(b[off:off+n]) {
		return off + n, nil
	}
	for ; n > 0; n-- {
		if off >= len(b) {
			return 0, s.truncated(off)
		}
		switch c := b[off]; {
		case c < 0x80:
			off++
		case c&0xe0 == 0xc0:
			off += 2
		case c&0xf0 == 0xe0:
			off += 3
		default:
			return 0, s.invalid(off, "bad UTF-8 in a string")
		}
	}
	if off > len(b) {
		return 0, s.truncated(len(b))
	}
	return off, nil
}

func isASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func isStringTag(tag byte) bool {
	return tag <= 0x1f || (tag >= 0x30 && tag <= 0x33) || tag == 'R' || tag == 'S'
}

func isBinaryTag(tag byte) bool {
	return (tag >= 0x20 && tag <= 0x2f) || (tag >= 0x34 && tag <= 0x37) || tag == 'A' || tag == 'B'
}

// skipString skips a value that must be a string (class and field names).
func (s *scanner) skipString(off int) (int, error) {
	if off >= len(s.b) {
		return 0, s.truncated(off)
	}
	if !isStringTag(s.b[off]) {
		return 0, s.invalid(off, "expected a string")
	}
	return s.skip(off)
}

// skipStringChunks skips 'R' chunks up to the final chunk.
func (s *scanner) skipStringChunks(off int) (int, error) {
	b := s.b
	for {
		if off+3 > len(b) {
			return 0, s.truncated(off)
		}
		final := b[off] == 'S'
		p, err := s.skipChars(off+3, int(binary.BigEndian.Uint16(b[off+1:])))
		if err != nil || final {
			return p, err
		}
		if p >= len(b) {
			return 0, s.truncated(p)
		}
		if tag := b[p]; tag != 'R' && tag != 'S' {
			if !isStringTag(tag) {
				return 0, s.invalid(p, "string chunk not followed by a string")
			}
			return s.skipValue(p)
		}
		off = p
	}
}

// skipBinaryChunks skips 'A' chunks up to the final chunk.
func (s *scanner) skipBinaryChunks(off int) (int, error) {
	b := s.b
	for {
		if off+3 > len(b) {
			return 0, s.truncated(off)
		}
		final := b[off] == 'B'
		p, err := s.need(off+3, int(binary.BigEndian.Uint16(b[off+1:])))
		if err != nil || final {
			return p, err
		}
		if p >= len(b) {
			return 0, s.truncated(p)
		}
		if tag := b[p]; tag != 'A' && tag != 'B' {
			if !isBinaryTag(tag) {
				return 0, s.invalid(p, "binary chunk not followed by binary")
			}
			return s.skipValue(p)
		}
		off = p
	}
}

// skipType skips the type of a typed list or map: a string, or an int
// referring to a type named earlier.
func (s *scanner) skipType(off int) (int, error) {
	if off >= len(s.b) {
		return 0, s.truncated(off)
	}
	if isStringTag(s.b[off]) {
		return s.skip(off)
	}
	_, p, err := s.readInt(off)
	return p, err
}

func (s *scanner) skipN(off, n int) (int, error) {
	if n < 0 {
		return 0, s.invalid(off, "negative list length")
	}
	var err error
	for ; n > 0; n-- {
		if off, err = s.skip(off); err != nil {
			return 0, err
		}
	}
	return off, nil
}

func (s *scanner) skipUntilEnd(off int) (int, error) {
	var err error
	for {
		if off >= len(s.b) {
			return 0, s.truncated(off)
		}
		if s.b[off] == 'Z' {
			return off + 1, nil
		}
		if off, err = s.skip(off); err != nil {
			return 0, err
		}
	}
}

func (s *scanner) skipPairs(off int) (int, error) {
	var err error
	for {
		if off >= len(s.b) {
			return 0, s.truncated(off)
		}
		if s.b[off] == 'Z' {
			return off + 1, nil
		}
		if off, err = s.skip(off); err != nil {
			return 0, err
		}
		if off, err = s.skip(off); err != nil {
			return 0, err
		}
	}
}

func (s *scanner) skipInstance(at, class, off int) (int, error) {
	if class < 0 || class >= len(s.defs) {
		return 0, s.invalid(at, "object of an undefined class")
	}
	n := s.defs[class]
	if n == unknownClass {
		return 0, errUnknownClass
	}
	return s.skipN(off, n)
}

// str is a string value located in the body.
type str struct {
	start, end int // the whole encoded value
	data       int // start of the characters of a single-chunk string
	ascii      bool
	null       bool
}

// str locates the string (or null) at off.
func (s *scanner) str(off int) (str, error) {
	b := s.b
	if off >= len(b) {
		return str{}, s.truncated(off)
	}
	var n, data int
	switch tag := b[off]; {
	case tag == 'N':
		return str{start: off, end: off + 1, null: true}, nil
	case tag <= 0x1f:
		n, data = int(tag), off+1
	case tag >= 0x30 && tag <= 0x33:
		if off+2 > len(b) {
			return str{}, s.truncated(off)
		}
		n, data = int(tag-0x30)<<8|int(b[off+1]), off+2
	case tag == 'S':
		if off+3 > len(b) {
			return str{}, s.truncated(off)
		}
		n, data = int(binary.BigEndian.Uint16(b[off+1:])), off+3
	case tag == 'R':
		end, err := s.skipStringChunks(off)
		return str{start: off, end: end}, err
	default:
		return str{}, s.invalid(off, "expected a string")
	}
	end, err := s.skipChars(data, n)
	if err != nil {
		return str{}, err
	}
	return str{start: off, end: end, data: data, ascii: end-data == n}, nil
}

// isScalar reports whether the value starting with tag holds no reference
// target: hessian2 numbers lists, maps and objects in stream order, so only
// scalar values can be dropped from a stream without renumbering later references.
func isScalar(tag byte) bool {
	switch {
	case tag >= 0x60 && tag <= 0x7f: // objects and lists
		return false
	case tag == 'C', tag == 'O', tag == 'Q', tag == 'H', tag == 'M',
		tag == 'U', tag == 'V', tag == 'W', tag == 'X':
		return false
	}
	return true
}
