package thrift

import (
	"encoding/binary"
	"math"

	"github.com/breeze-mesh/breeze/codecs"
)

// hdrPair is one key/value of a transport header, as bytes of the frame.
type hdrPair struct {
	block  int
	intKey int    // TTHeader integer key, or -1
	key    []byte // string keys
	val    []byte
	// mut is 1 + the index of the mutation that overwrites the pair, 0
	// when none does, dropped when a removal names it and no mutation.
	mut int
}

// dropped marks a pair a removal deletes.
const dropped = -1

// pairs lists the key/values of a parsed header layout.
func pairs(ps []hdrPair, f []byte, lay *hdrLayout, tr transport) []hdrPair {
	for bi, bl := range lay.blocks {
		b := f[:bl.end]
		off := bl.start
		if tr == tHeader {
			r := reader{b: b, limit: len(b)}
			_, off, _ = r.uvarint(off, 5)
			count, o, _ := r.uvarint(off, 5)
			off = o
			for range count {
				var k, v []byte
				k, off, _ = r.vstring(off)
				v, off, _ = r.vstring(off)
				ps = append(ps, hdrPair{block: bi, intKey: -1, key: k, val: v})
			}
			continue
		}
		off++ // info id
		switch bl.typ {
		case infoACLToken:
			v, _, _ := u16string(b, off)
			ps = append(ps, hdrPair{block: bi, intKey: -1, key: aclTokenBytes, val: v})
		case infoKeyValue, infoIntKV:
			count := int(binary.BigEndian.Uint16(b[off:]))
			off += 2
			for range count {
				p := hdrPair{block: bi, intKey: -1}
				if bl.typ == infoKeyValue {
					p.key, off, _ = u16string(b, off)
				} else {
					p.intKey = int(binary.BigEndian.Uint16(b[off:]))
					off += 2
				}
				p.val, off, _ = u16string(b, off)
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// mutate rebuilds a THeader or TTHeader frame with msg.Removals and
// msg.Mutations applied to its header key/values and msg.ID as its seqid.
// Header entries whose key a removal names are dropped (every occurrence;
// not a TTHeader ACL token, which has a block of its own), unless a
// mutation names it too; entries whose key a mutation names get the new
// value (every occurrence); other mutations are appended to the first
// key/value block of their kind, or to a new block. Everything else (flags,
// protocol id, unknown info blocks, the message) is copied unchanged.
func (c *codec) mutate(msg *codecs.Message, tr transport, p protocol, seqLen int, hdrSeq bool) ([]byte, error) {
	f := msg.Frame
	end := msg.Private[privHeaderEnd]
	id := uint32(msg.ID)
	var blocks [8]hdrSpan
	lay := hdrLayout{blocks: blocks[:0], walk: true}
	var err error
	if tr == tHeader {
		_, err = c.theader(f, end, &lay)
	} else {
		_, err = c.ttheader(f, end, &lay)
	}
	if err != nil {
		return nil, err
	}
	var psBuf [32]hdrPair
	ps := pairs(psBuf[:0], f, &lay, tr)

	// The last of repeated mutation keys wins.
	type mut struct {
		key, val string
		intKey   int
		found    bool
	}
	var mutBuf [8]mut
	muts := mutBuf[:0]
	for i, m := range msg.Mutations {
		later := false
		for _, n := range msg.Mutations[i+1:] {
			if n.Key == m.Key {
				later = true
				break
			}
		}
		if later {
			continue
		}
		mu := mut{key: m.Key, val: m.Value, intKey: -1}
		if tr == tTTHeader {
			if k, ok := intKeyOf(m.Key); ok {
				mu.intKey = int(k)
			}
			if len(m.Key) > 0xffff || len(m.Value) > 0xffff {
				return nil, codecs.Errorf(reasonMutation, "TTHeader strings are at most 65535 bytes: key %q", trim(m.Key))
			}
		}
		muts = append(muts, mu)
	}
	for i := range ps {
		for _, r := range msg.Removals {
			if ps[i].matches(r, tr) && lay.blocks[ps[i].block].typ != infoACLToken {
				ps[i].mut = dropped
			}
		}
		for j := range muts {
			same := ps[i].intKey >= 0 && ps[i].intKey == muts[j].intKey ||
				ps[i].intKey < 0 && muts[j].intKey < 0 && string(ps[i].key) == muts[j].key
			if same {
				ps[i].mut = j + 1
				muts[j].found = true
			}
		}
	}
	var addBuf [8]mut
	addStr, addInt := addBuf[:0], []mut(nil)
	for _, m := range muts {
		if !m.found {
			if m.intKey >= 0 {
				addInt = append(addInt, m)
			} else {
				addStr = append(addStr, m)
			}
		}
	}
	vstring := func(out []byte, p *hdrPair) []byte {
		if p.mut > 0 {
			return appendVstring(out, p.key, muts[p.mut-1].val)
		}
		return appendVstring(out, p.key, p.val)
	}
	ttpair := func(out []byte, p *hdrPair) []byte {
		if p.mut > 0 {
			return appendTTPair(out, p.intKey, p.key, muts[p.mut-1].val)
		}
		return appendTTPair(out, p.intKey, p.key, p.val)
	}
	extra := 16
	for _, m := range muts {
		extra += len(m.key) + len(m.val) + 8
	}
	// The message: as received, or inflated when it was compressed (the
	// frame then goes out without the zlib transform).
	src, seqOff := f[end:], msg.Private[privSeqOff]-end
	if lay.zlib {
		var err error
		if src, err = c.inflate(f[end:]); err != nil {
			return nil, err
		}
		r := reader{b: src, limit: math.MaxInt32}
		h, err := r.message(0)
		if err != nil {
			return nil, codecs.Errorf(reasonBadMessage, "inflated message: %v", err)
		}
		seqOff, seqLen = h.seqOff, h.seqLen
		extra += len(src) - len(f)
	}
	out := make([]byte, 0, len(f)+extra)
	if lay.zlib {
		out = append(out, f[:hdrMetaSize]...)
		id := byte(protoIDBinary)
		if p == pCompact {
			id = protoIDCompact
		}
		out = append(out, id, 0) // the protocol id, no transforms
	} else {
		out = append(out, f[:lay.prefixEnd]...)
	}
	if hdrSeq {
		binary.BigEndian.PutUint32(out[hdrSeqOff:], id)
	}

	// blockLen counts the pairs of block bi that are kept.
	blockLen := func(bi int) int {
		n := 0
		for i := range ps {
			if ps[i].block == bi && ps[i].mut != dropped {
				n++
			}
		}
		return n
	}
	if tr == tHeader {
		for bi := range lay.blocks {
			var add []mut
			if bi == 0 {
				add = addStr
			}
			out = appendUvarint(out, infoKeyValue)
			out = appendUvarint(out, uint64(blockLen(bi)+len(add)))
			for i := range ps {
				if ps[i].block == bi && ps[i].mut != dropped {
					out = vstring(out, &ps[i])
				}
			}
			for _, m := range add {
				out = appendVstring(out, m.key, m.val)
			}
		}
		if len(lay.blocks) == 0 && len(addStr) > 0 {
			out = appendUvarint(out, infoKeyValue)
			out = appendUvarint(out, uint64(len(addStr)))
			for _, m := range addStr {
				out = appendVstring(out, m.key, m.val)
			}
		}
		if lay.restStart < end && f[lay.restStart] != infoPadding {
			// An info block of a type Apache does not read: keep it, last.
			out = append(out, f[lay.restStart:end]...)
		}
	} else {
		strDone, intDone := false, false
		for bi, bl := range lay.blocks {
			switch bl.typ {
			case infoACLToken:
				out = append(out, infoACLToken)
				for i := range ps {
					if ps[i].block == bi && ps[i].mut > 0 {
						out = appendU16string(out, muts[ps[i].mut-1].val)
					} else if ps[i].block == bi {
						out = appendU16string(out, ps[i].val)
					}
				}
			case infoKeyValue, infoIntKV:
				var add []mut
				if bl.typ == infoKeyValue && !strDone {
					add, strDone = addStr, true
				} else if bl.typ == infoIntKV && !intDone {
					add, intDone = addInt, true
				}
				n := blockLen(bi) + len(add)
				if n > 0xffff {
					return nil, codecs.Errorf(reasonMutation, "more than 65535 TTHeader key/values")
				}
				out = append(out, bl.typ)
				out = binary.BigEndian.AppendUint16(out, uint16(n))
				for i := range ps {
					if ps[i].block == bi && ps[i].mut != dropped {
						out = ttpair(out, &ps[i])
					}
				}
				for _, m := range add {
					out = appendTTPair(out, m.intKey, m.key, m.val)
				}
			}
		}
		if !strDone && len(addStr) > 0 {
			out = append(out, infoKeyValue)
			out = binary.BigEndian.AppendUint16(out, uint16(len(addStr)))
			for _, m := range addStr {
				out = appendTTPair(out, -1, m.key, m.val)
			}
		}
		if !intDone && len(addInt) > 0 {
			out = append(out, infoIntKV)
			out = binary.BigEndian.AppendUint16(out, uint16(len(addInt)))
			for _, m := range addInt {
				out = appendTTPair(out, m.intKey, m.key, m.val)
			}
		}
	}
	for (len(out)-hdrMetaSize)%4 != 0 {
		out = append(out, 0)
	}
	hdrLen := len(out) - hdrMetaSize
	if hdrLen > maxHeaderSize || tr == tTTHeader && hdrLen > maxTTHeader {
		return nil, codecs.Errorf(reasonMutation, "header of %d bytes after mutations", hdrLen)
	}
	binary.BigEndian.PutUint16(out[12:], uint16(hdrLen/4))

	// The message, with the new seqid.
	newEnd := len(out)
	out = append(out, src[:seqOff]...)
	if p == pBinary {
		out = binary.BigEndian.AppendUint32(out, id)
	} else if varintLen(id) <= seqLen {
		out = append(out, src[seqOff:seqOff+seqLen]...)
		putVarint(out[len(out)-seqLen:], id)
	} else {
		out = appendVarint(out, id)
	}
	out = append(out, src[seqOff+seqLen:]...)
	if msg.Private[privFlags]&flagInnerFramed != 0 {
		binary.BigEndian.PutUint32(out[newEnd:], uint32(len(out)-newEnd-4))
	}
	if err := c.fixLength(out, tr); err != nil {
		return nil, err
	}
	return out, nil
}

// matches reports whether the pair's key is name: a string key equal to
// it, or a TTHeader integer key it names (to_cluster, ttheader_int_300).
func (p *hdrPair) matches(name string, tr transport) bool {
	if p.intKey < 0 {
		return string(p.key) == name
	}
	if tr != tTTHeader {
		return false
	}
	k, ok := intKeyOf(name)
	return ok && int(k) == p.intKey
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// bytesOrString is what the append helpers copy from.
type bytesOrString interface{ ~[]byte | ~string }

func appendVstring[K, V bytesOrString](b []byte, k K, v V) []byte {
	b = appendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = appendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendU16string[S bytesOrString](b []byte, s S) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendTTPair[K, V bytesOrString](b []byte, intKey int, key K, val V) []byte {
	if intKey >= 0 {
		b = binary.BigEndian.AppendUint16(b, uint16(intKey))
	} else {
		b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
		b = append(b, key...)
	}
	return appendU16string(b, val)
}

// trim shortens a hostile string before it goes into an error message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

var aclTokenBytes = []byte(aclTokenKey)
