package thrift

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/breeze-mesh/breeze/codecs"
)

// Thrift message types (the wire values).
const (
	msgCall      = 1
	msgReply     = 2
	msgException = 3
	msgOneway    = 4
)

// Binary protocol.
const (
	binaryVersionMask = 0xffff0000
	binaryVersion1    = 0x80010000
)

// Compact protocol.
const (
	compactID          = 0x82
	compactVersion     = 1
	compactVersionMask = 0x1f
	compactTypeShift   = 5
)

// Binary protocol type ids.
const (
	bStop   = 0
	bVoid   = 1
	bBool   = 2
	bByte   = 3
	bDouble = 4
	bI16    = 6
	bI32    = 8
	bI64    = 10
	bString = 11
	bStruct = 12
	bMap    = 13
	bSet    = 14
	bList   = 15
	bUUID   = 16
)

// Compact protocol type ids.
const (
	cStop      = 0
	cTrue      = 1
	cFalse     = 2
	cByte      = 3
	cI16       = 4
	cI32       = 5
	cI64       = 6
	cDouble    = 7
	cBinary    = 8
	cList      = 9
	cSet       = 10
	cMap       = 11
	cStruct    = 12
	cUUID      = 13
	cMaxTypeID = cUUID
)

// errShort means the bytes end before the message does. Unframed, that is
// "wait for more"; inside a frame whose length is known, it is a bad frame.
var errShort = errors.New("thrift: message truncated")

// msgHeader is a decoded Thrift message header (TMessage).
type msgHeader struct {
	proto      protocol
	strict     bool // binary: written with the 0x8001 version word
	typ        byte
	seqID      uint32
	nameStart  int // offsets in the scanned bytes
	nameEnd    int
	seqOff     int
	seqLen     int // 4 for binary; the varint's length for compact
	bodyOffset int // where the message's struct starts
}

// reader walks bytes that may stop short of the message's end. need
// records how many bytes a truncated read needed, so that an unframed
// decode can wait for that many before scanning again.
type reader struct {
	b     []byte
	limit int // no offset may reach past this: the frame size limit
	need  int
}

// has reports whether k bytes are readable at off. When they are not, it
// says why: beyond the limit (a frame too large) or not yet received.
func (r *reader) has(off, k int) error {
	end := off + k
	if k < 0 || end < off {
		return codecs.Errorf(reasonTooLarge, "a length of %d bytes at offset %d", k, off)
	}
	if end > r.limit {
		return codecs.Errorf(reasonTooLarge, "message needs at least %d bytes, limit %d", end, r.limit)
	}
	if end <= len(r.b) {
		return nil
	}
	if end > r.need {
		r.need = end
	}
	return errShort
}

// uvarint reads a varint of at most maxBytes bytes.
func (r *reader) uvarint(off, maxBytes int) (uint64, int, error) {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		if err := r.has(off+i, 1); err != nil {
			return 0, 0, err
		}
		c := r.b[off+i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, off + i + 1, nil
		}
	}
	return 0, 0, codecs.Errorf(reasonBadMessage, "varint longer than %d bytes at offset %d", maxBytes, off)
}

// uvarint32 reads a compact i32 varint: at most 5 bytes, and the fifth may
// only carry the top 4 bits. Rejecting the rest keeps every accepted
// encoding the unique one of its length, so that writing the same value
// back in the same number of bytes reproduces the frame.
func (r *reader) uvarint32(off int) (uint32, int, error) {
	v, end, err := r.uvarint(off, 5)
	if err != nil {
		return 0, 0, err
	}
	if end-off == 5 && r.b[off+4] > 0x0f {
		return 0, 0, codecs.Errorf(reasonBadMessage, "varint at offset %d overflows 32 bits", off)
	}
	return uint32(v), end, nil
}

// message reads a message header at off, in the protocol its first byte
// says (compact 0x82, binary strict 0x80, otherwise binary non-strict).
func (r *reader) message(off int) (msgHeader, error) {
	var h msgHeader
	if err := r.has(off, 1); err != nil {
		return h, err
	}
	switch r.b[off] {
	case compactID:
		return r.compactMessage(off)
	case 0x80:
		return r.binaryMessage(off, true)
	}
	return r.binaryMessage(off, false)
}

func (r *reader) binaryMessage(off int, strict bool) (msgHeader, error) {
	h := msgHeader{proto: pBinary, strict: strict}
	if strict {
		if err := r.has(off, 4); err != nil {
			return h, err
		}
		v := binary.BigEndian.Uint32(r.b[off:])
		if v&binaryVersionMask != binaryVersion1 {
			return h, codecs.Errorf(reasonBadMessage, "binary protocol version %#08x, want 0x8001xxxx", v)
		}
		h.typ = byte(v)
		off += 4
	}
	if err := r.has(off, 4); err != nil {
		return h, err
	}
	n := int32(binary.BigEndian.Uint32(r.b[off:]))
	if n < 0 {
		return h, codecs.Errorf(reasonBadMessage, "negative method name length %d", n)
	}
	off += 4
	h.nameStart, h.nameEnd = off, off+int(n)
	if err := r.has(off, int(n)); err != nil {
		return h, err
	}
	off += int(n)
	if !strict {
		if err := r.has(off, 1); err != nil {
			return h, err
		}
		h.typ = r.b[off]
		off++
	}
	if err := r.has(off, 4); err != nil {
		return h, err
	}
	h.seqID = binary.BigEndian.Uint32(r.b[off:])
	h.seqOff, h.seqLen = off, 4
	h.bodyOffset = off + 4
	return h, checkType(h.typ)
}

func (r *reader) compactMessage(off int) (msgHeader, error) {
	h := msgHeader{proto: pCompact}
	if err := r.has(off, 2); err != nil {
		return h, err
	}
	b := r.b[off+1]
	if b&compactVersionMask != compactVersion {
		return h, codecs.Errorf(reasonBadMessage, "compact protocol version %d, want 1", b&compactVersionMask)
	}
	h.typ = b >> compactTypeShift
	seq, end, err := r.uvarint32(off + 2)
	if err != nil {
		return h, err
	}
	h.seqID, h.seqOff, h.seqLen = seq, off+2, end-(off+2)
	n, end2, err := r.uvarint32(end)
	if err != nil {
		return h, err
	}
	if n > math.MaxInt32 {
		return h, codecs.Errorf(reasonBadMessage, "method name length %d", n)
	}
	h.nameStart, h.nameEnd = end2, end2+int(n)
	if err := r.has(end2, int(n)); err != nil {
		return h, err
	}
	h.bodyOffset = end2 + int(n)
	return h, checkType(h.typ)
}

func checkType(t byte) error {
	if t < msgCall || t > msgOneway {
		return codecs.Errorf(reasonBadMessage, "message type %d", t)
	}
	return nil
}

// replyStatus tells a successful reply (the result struct's first field is
// 0, "success", or the struct is empty: a void method) from a declared
// exception (any other field id).
func (r *reader) replyStatus(off int, p protocol) (codecs.ResponseStatus, error) {
	if err := r.has(off, 1); err != nil {
		return 0, err
	}
	b := r.b[off]
	if b == bStop { // cStop too
		return codecs.StatusOK, nil
	}
	if p == pBinary {
		if err := r.has(off+1, 2); err != nil {
			return 0, err
		}
		if binary.BigEndian.Uint16(r.b[off+1:]) == 0 {
			return codecs.StatusOK, nil
		}
		return codecs.StatusAppError, nil
	}
	if b>>4 != 0 { // a delta from field id 0: id >= 1
		return codecs.StatusAppError, nil
	}
	v, _, err := r.uvarint(off+1, 3)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return codecs.StatusOK, nil
	}
	return codecs.StatusAppError, nil
}

// exceptionType reads the type (field 2, an i32) of the
// TApplicationException at off: what retry policies list and outlier
// detection classifies. 0 when it has none or cannot be read: the frame is
// relayed all the same, as before it was read.
func (r *reader) exceptionType(off int, p protocol) uint32 {
	var typ int32
	var err error
	if p == pCompact {
		typ, err = r.cExceptionType(off)
	} else {
		typ, err = r.bExceptionType(off)
	}
	if err != nil {
		return 0
	}
	return uint32(typ)
}

const excFieldType = 2

func (r *reader) bExceptionType(off int) (int32, error) {
	for {
		if err := r.has(off, 1); err != nil {
			return 0, err
		}
		ft := r.b[off]
		if ft == bStop {
			return 0, nil
		}
		if err := r.has(off, 3); err != nil {
			return 0, err
		}
		id := int16(binary.BigEndian.Uint16(r.b[off+1:]))
		off += 3
		if id == excFieldType && ft == bI32 {
			if err := r.has(off, 4); err != nil {
				return 0, err
			}
			return int32(binary.BigEndian.Uint32(r.b[off:])), nil
		}
		var err error
		if off, err = r.bSkip(off, ft, maxDepth-1); err != nil {
			return 0, err
		}
	}
}

func (r *reader) cExceptionType(off int) (int32, error) {
	var id int16
	for {
		if err := r.has(off, 1); err != nil {
			return 0, err
		}
		h := r.b[off]
		off++
		if h == cStop {
			return 0, nil
		}
		if delta := h >> 4; delta != 0 {
			id += int16(delta)
		} else { // long form: the field id follows as a zigzag i16
			v, end, err := r.uvarint(off, 3)
			if err != nil {
				return 0, err
			}
			id, off = int16(zigzag(v)), end
		}
		ft := h & 0x0f
		if ft == cStop || ft > cMaxTypeID {
			return 0, codecs.Errorf(reasonBadBody, "field type %d at offset %d", ft, off-1)
		}
		if id == excFieldType && ft == cI32 {
			v, _, err := r.uvarint32(off)
			if err != nil {
				return 0, err
			}
			return int32(zigzag(uint64(v))), nil
		}
		var err error
		if off, err = r.cSkip(off, ft, maxDepth-1, false); err != nil {
			return 0, err
		}
	}
}

// zigzag decodes a compact protocol integer.
func zigzag(v uint64) int64 { return int64(v>>1) ^ -int64(v&1) }

// skipStruct skips a struct at off and returns where it ends, reading only
// lengths: nothing is built and nothing sized by the wire is allocated.
// Every element takes at least one byte, so a hostile count costs at most
// one step per byte received, and nesting is bounded by maxDepth.
func (r *reader) skipStruct(off int, p protocol) (int, error) {
	if p == pCompact {
		return r.cSkip(off, cStruct, maxDepth, false)
	}
	return r.bSkip(off, bStruct, maxDepth)
}

func (r *reader) bSkip(off int, t byte, depth int) (int, error) {
	fixed := 0
	switch t {
	case bBool, bByte:
		fixed = 1
	case bI16:
		fixed = 2
	case bI32:
		fixed = 4
	case bI64, bDouble:
		fixed = 8
	case bUUID:
		fixed = 16
	case bString:
		if err := r.has(off, 4); err != nil {
			return 0, err
		}
		n := int32(binary.BigEndian.Uint32(r.b[off:]))
		if n < 0 {
			return 0, codecs.Errorf(reasonBadBody, "negative string length %d at offset %d", n, off)
		}
		fixed = 4 + int(n)
	case bStruct:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		for {
			if err := r.has(off, 1); err != nil {
				return 0, err
			}
			ft := r.b[off]
			if ft == bStop {
				return off + 1, nil
			}
			var err error
			if off, err = r.bSkip(off+3, ft, depth-1); err != nil {
				return 0, err
			}
		}
	case bMap:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		if err := r.has(off, 6); err != nil {
			return 0, err
		}
		kt, vt := r.b[off], r.b[off+1]
		n := int32(binary.BigEndian.Uint32(r.b[off+2:]))
		off += 6
		if err := r.count(off, int64(n), 2); err != nil {
			return 0, err
		}
		if n > 0 && (!bElemType(kt) || !bElemType(vt)) {
			return 0, codecs.Errorf(reasonBadBody, "map of types %d, %d", kt, vt)
		}
		for i := int32(0); i < n; i++ {
			var err error
			if off, err = r.bSkip(off, kt, depth-1); err != nil {
				return 0, err
			}
			if off, err = r.bSkip(off, vt, depth-1); err != nil {
				return 0, err
			}
		}
		return off, nil
	case bSet, bList:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		if err := r.has(off, 5); err != nil {
			return 0, err
		}
		et := r.b[off]
		n := int32(binary.BigEndian.Uint32(r.b[off+1:]))
		off += 5
		if err := r.count(off, int64(n), 1); err != nil {
			return 0, err
		}
		if n > 0 && !bElemType(et) {
			return 0, codecs.Errorf(reasonBadBody, "list of type %d", et)
		}
		for i := int32(0); i < n; i++ {
			var err error
			if off, err = r.bSkip(off, et, depth-1); err != nil {
				return 0, err
			}
		}
		return off, nil
	default:
		return 0, codecs.Errorf(reasonBadBody, "type id %d at offset %d", t, off)
	}
	if err := r.has(off, fixed); err != nil {
		return 0, err
	}
	return off + fixed, nil
}

func bElemType(t byte) bool {
	switch t {
	case bBool, bByte, bDouble, bI16, bI32, bI64, bString, bStruct, bMap, bSet, bList, bUUID:
		return true
	}
	return false
}

// count checks a container's element count: not negative, and n elements
// of at least min bytes each must fit under the limit.
func (r *reader) count(off int, n int64, min int) error {
	if n < 0 {
		return codecs.Errorf(reasonBadBody, "negative container size %d at offset %d", n, off)
	}
	if int64(off)+n*int64(min) > int64(r.limit) {
		return codecs.Errorf(reasonTooLarge, "container of %d elements at offset %d cannot fit in %d bytes", n, off, r.limit)
	}
	return nil
}

// cSkip skips a compact value of type t. A bool is one byte inside a
// container and none as a struct field (its value is in the field header).
func (r *reader) cSkip(off int, t byte, depth int, inContainer bool) (int, error) {
	var err error
	fixed := 0
	switch t {
	case cTrue, cFalse:
		if inContainer {
			fixed = 1
		}
	case cByte:
		fixed = 1
	case cI16:
		_, off, err = r.uvarint(off, 3)
		return off, err
	case cI32:
		_, off, err = r.uvarint(off, 5)
		return off, err
	case cI64:
		_, off, err = r.uvarint(off, 10)
		return off, err
	case cDouble:
		fixed = 8
	case cUUID:
		fixed = 16
	case cBinary:
		var n uint32
		if n, off, err = r.uvarint32(off); err != nil {
			return 0, err
		}
		if n > math.MaxInt32 {
			return 0, codecs.Errorf(reasonBadBody, "binary of %d bytes", n)
		}
		fixed = int(n)
	case cStruct:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		for {
			if err := r.has(off, 1); err != nil {
				return 0, err
			}
			h := r.b[off]
			off++
			if h == cStop {
				return off, nil
			}
			if h>>4 == 0 { // long form: the field id follows as a zigzag i16
				if _, off, err = r.uvarint(off, 3); err != nil {
					return 0, err
				}
			}
			ft := h & 0x0f
			if ft == cStop || ft > cMaxTypeID {
				return 0, codecs.Errorf(reasonBadBody, "field type %d at offset %d", ft, off-1)
			}
			if off, err = r.cSkip(off, ft, depth-1, false); err != nil {
				return 0, err
			}
		}
	case cList, cSet:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		if err := r.has(off, 1); err != nil {
			return 0, err
		}
		h := r.b[off]
		off++
		et := h & 0x0f
		n := uint64(h >> 4)
		if n == 15 {
			var n32 uint32
			if n32, off, err = r.uvarint32(off); err != nil {
				return 0, err
			}
			n = uint64(n32)
		}
		if err := r.count(off, int64(n), 1); err != nil {
			return 0, err
		}
		if n > 0 && (et == cStop || et > cMaxTypeID) {
			return 0, codecs.Errorf(reasonBadBody, "list of type %d", et)
		}
		for i := uint64(0); i < n; i++ {
			if off, err = r.cSkip(off, et, depth-1, true); err != nil {
				return 0, err
			}
		}
		return off, nil
	case cMap:
		if depth == 0 {
			return 0, codecs.Errorf(reasonTooDeep, "structs and containers nested more than %d deep", maxDepth)
		}
		var n uint32
		if n, off, err = r.uvarint32(off); err != nil {
			return 0, err
		}
		if n == 0 {
			return off, nil
		}
		if err := r.count(off, int64(n), 2); err != nil {
			return 0, err
		}
		if err := r.has(off, 1); err != nil {
			return 0, err
		}
		kt, vt := r.b[off]>>4, r.b[off]&0x0f
		off++
		if kt == cStop || kt > cMaxTypeID || vt == cStop || vt > cMaxTypeID {
			return 0, codecs.Errorf(reasonBadBody, "map of types %d, %d", kt, vt)
		}
		for i := uint32(0); i < n; i++ {
			if off, err = r.cSkip(off, kt, depth-1, true); err != nil {
				return 0, err
			}
			if off, err = r.cSkip(off, vt, depth-1, true); err != nil {
				return 0, err
			}
		}
		return off, nil
	default:
		return 0, codecs.Errorf(reasonBadBody, "type id %d at offset %d", t, off)
	}
	if err := r.has(off, fixed); err != nil {
		return 0, err
	}
	return off + fixed, nil
}

// varintLen is the length of v as a minimal varint.
func varintLen(v uint32) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// putVarint writes v into exactly len(b) bytes (which must be at least
// varintLen(v)): the minimal encoding padded with continuation bytes, a
// form every Thrift compact reader accepts (Apache Go, C++, Java, Python,
// Kitex all loop until a byte without the continuation bit).
func putVarint(b []byte, v uint32) {
	for i := range b {
		c := byte(v & 0x7f)
		v >>= 7
		if i < len(b)-1 {
			c |= 0x80
		}
		b[i] = c
	}
}

func appendVarint(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
