package dubbo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/breeze-mesh/breeze/codecs"
)

// text returns the string v located in the scanned body.
func (c *codec) text(v str) (string, error) {
	if v.null {
		return "", nil
	}
	if v.ascii {
		// For ASCII the hessian2 bytes are the string: no decoder needed.
		return c.strs.String(c.sc.b[v.data:v.end]), nil
	}
	val, err := c.hessian.decode(c.sc.b[v.start:v.end])
	if err != nil {
		return "", err
	}
	s, ok := val.(string)
	if !ok {
		return "", codecs.Errorf(reasonBadBody, "body offset %d: expected a string, got %T", v.start, val)
	}
	return s, nil
}

// scalar stringifies a number or boolean attachment value; it reports false
// for values that have no useful text form (null, binary, dates, and any
// list, map or object).
func (c *codec) scalar(b []byte) (string, bool, error) {
	if tag := b[0]; tag == 'N' || !isScalar(tag) || isBinaryTag(tag) {
		return "", false, nil
	}
	v, err := c.hessian.decode(b)
	if err != nil {
		return "", false, err
	}
	switch v := v.(type) {
	case int32:
		return strconv.FormatInt(int64(v), 10), true, nil
	case int64:
		return strconv.FormatInt(v, 10), true, nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true, nil
	case bool:
		return strconv.FormatBool(v), true, nil
	}
	return "", false, nil
}

// hessianDecoder decodes single values with dubbo-go-hessian2, reusing one
// Decoder per connection.
type hessianDecoder struct {
	d *hessian.Decoder
}

// decode decodes the one value in b. The scanner has already bounded b, so
// the library never sees more than that value; it can still panic on
// malformed input (a lone UTF-16 surrogate at the end of a string indexes
// past its buffer), hence the recover.
func (h *hessianDecoder) decode(b []byte) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, codecs.Errorf(reasonBadBody, "hessian2 decoder panicked on %d bytes: %v", len(b), r)
		}
	}()
	if h.d == nil {
		h.d = hessian.NewDecoder(b)
	} else {
		h.d.Reset(b)
	}
	v, err = h.d.Decode()
	if err != nil {
		return nil, codecs.Errorf(reasonBadBody, "hessian2 value: %v", err)
	}
	return v, nil
}

// responseFrame builds a response whose body is a hessian2 string, the form
// of every response whose status is not 20.
func responseFrame(id uint64, status byte, text string) []byte {
	e := hessian.NewEncoder()
	e.Append([]byte{magicHigh, magicLow, hessian2ID, status, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	_ = e.Encode(text) // a string always encodes
	f := e.Buffer()
	binary.BigEndian.PutUint64(f[4:], id)
	binary.BigEndian.PutUint32(f[12:], uint32(len(f)-headerLen))
	return f
}

// mergeAttachments builds a new frame whose attachments are the old ones
// without msg.Removals, with msg.Mutations added or overwritten; everything
// else (arguments, result, trailing bytes) is copied unchanged.
//
// Untouched pairs are copied as bytes, never decoded and re-encoded, so
// values the proxy cannot represent (objects of Java classes) survive. An
// overwritten or removed pair is dropped when its value is a scalar; a
// list, map or object value stays (dropping it would renumber later
// hessian2 references): an overwritten one is followed by the new pair
// (Java's HashMap and dubbo-go keep the last), a removed one is kept.
func (c *codec) mergeAttachments(msg *codecs.Message) ([]byte, error) {
	f := msg.Frame
	start, end := msg.Private[privAttStart], msg.Private[privAttEnd]
	if start < headerLen || end < start || end > len(f) {
		return nil, fmt.Errorf("dubbo: encode: attachment offsets %d-%d do not fit the %d-byte frame", start, end, len(f))
	}
	prefix := make([]byte, 0, len(f)+32*len(msg.Mutations))
	prefix = append(prefix, f[:start]...)
	out, err := c.appendAttachments(prefix, msg, false)
	if errors.Is(err, errUnknownClass) {
		// A kept value is an object of a class defined in the arguments:
		// learn the class table from the start of the body, then retry.
		out, err = c.appendAttachments(prefix, msg, true)
	}
	if err != nil {
		return nil, fmt.Errorf("dubbo: encode: attachments: %w", err)
	}
	out = append(out, f[end:]...)
	if len(out) > c.maxFrame {
		return nil, codecs.Errorf(reasonTooLarge, "mutations make a frame of %d bytes, limit %d", len(out), c.maxFrame)
	}
	binary.BigEndian.PutUint32(out[12:], uint32(len(out)-headerLen))
	if t := msg.Private[privResultType]; t != 0 {
		out[t] += resultExceptionWithAttachments // 0-2 become 3-5
	}
	return out, nil
}

func (c *codec) appendAttachments(out []byte, msg *codecs.Message, learnClasses bool) ([]byte, error) {
	f := msg.Frame
	body := f[headerLen:]
	p := msg.Private[privAttStart] - headerLen
	q := msg.Private[privAttEnd] - headerLen
	s := &c.sc
	s.reset(body)
	if learnClasses {
		for off := 0; off < p; {
			var err error
			if off, err = s.skip(off); err != nil {
				return nil, err
			}
		}
	} else {
		for range msg.Private[privClassDefs] {
			s.defs = append(s.defs, unknownClass)
		}
	}
	if p == q || body[p] == 'N' {
		out = append(out, 'H')
	} else {
		r := p + 1
		if body[p] == 'M' {
			var err error
			if r, err = s.skipType(r); err != nil {
				return nil, err
			}
		}
		out = append(out, body[p:r]...)
		for r < q-1 { // the map ends with 'Z' at q-1
			kEnd, err := s.skip(r)
			if err != nil {
				return nil, err
			}
			vEnd, err := s.skip(kEnd)
			if err != nil {
				return nil, err
			}
			if !isScalar(body[kEnd]) || !c.replaced(r, msg) {
				out = append(out, body[r:vEnd]...)
			}
			r = vEnd
		}
	}
	e := hessian.NewEncoder()
	for i, m := range msg.Mutations {
		if overridden(msg.Mutations, i) {
			continue
		}
		_ = e.Encode(m.Key) // strings always encode
		_ = e.Encode(m.Value)
	}
	out = append(out, e.Buffer()...)
	return append(out, 'Z'), nil
}

// replaced reports whether the key at body offset off is set by one of
// msg's mutations or named by one of its removals.
func (c *codec) replaced(off int, msg *codecs.Message) bool {
	if !isStringTag(c.sc.b[off]) {
		return false
	}
	v, err := c.sc.str(off)
	if err != nil {
		return false
	}
	if v.ascii {
		key := c.sc.b[v.data:v.end]
		for _, m := range msg.Mutations {
			if string(key) == m.Key { // compared, not allocated
				return true
			}
		}
		for _, r := range msg.Removals {
			if string(key) == r {
				return true
			}
		}
		return false
	}
	key, err := c.text(v)
	if err != nil {
		return false
	}
	_, ok := msg.Mutations.Get(key)
	return ok || slices.Contains(msg.Removals, key)
}

// overridden reports whether a later mutation sets the same key as muts[i].
func overridden(muts codecs.Metadata, i int) bool {
	for _, m := range muts[i+1:] {
		if m.Key == muts[i].Key {
			return true
		}
	}
	return false
}
