package thrift

import (
	"compress/zlib"
	"encoding/binary"
	"io"
	"strconv"

	"github.com/breeze-mesh/breeze/codecs"
)

// THeader (Apache Thrift doc/specs/HeaderFormat.md) and Kitex TTHeader
// share a layout: a 4-byte length, a 2-byte magic, 2-byte flags, a 4-byte
// seqid, the header length in 4-byte words (uint16), the header, then the
// Thrift message:
//
//	0      4     6     8       12   14                 14+4*words
//	length magic flags seqid   words header (padded)   message
//
// THeader's header is made of compact varints: protocol id, transform
// count and ids, then info blocks (1: key/values, varint-length strings)
// until a padding zero. TTHeader's uses bytes and uint16s: protocol id,
// transform count and ids, then info blocks (0x01 string key/values, 0x10
// uint16 key/values, 0x11 ACL token; zero bytes are padding), with
// uint16-length strings.
const (
	hdrMetaSize = 14
	hdrSeqOff   = 8

	theaderMagic  = 0x0fff
	ttheaderMagic = 0x1000

	// THeader protocol ids (TTHeader uses the same for Thrift).
	protoIDBinary  = 0
	protoIDCompact = 2

	transformZlib = 1

	infoPadding   = 0x00
	infoKeyValue  = 0x01
	infoIntKV     = 0x10 // TTHeader
	infoACLToken  = 0x11 // TTHeader
	maxTTHeader   = 65536
	maxHeaderSize = 0xffff * 4
)

// aclTokenKey is the metadata key of TTHeader's ACL token: the key Kitex
// stores it under in its string key/values (gopkg ttheader.GDPRToken).
const aclTokenKey = "RPC_TRANSIT_gdpr-token"

// intKeyNames names TTHeader's integer keys as Kitex defines them
// (github.com/cloudwego/gopkg/protocol/ttheader metakey.go).
var intKeyNames = [...]string{
	"mesh_version", "transport_type", "log_id", "from_service", "from_cluster", "from_idc",
	"to_service", "to_cluster", "to_idc", "to_method", "env", "dest_address", "rpc_timeout",
	"read_timeout", "ring_hash_key", "ddp_tag", "with_mesh_header", "connect_timeout",
	"span_context", "short_connection", "from_method", "stress_tag", "msg_type",
	"http_content_type", "raw_ring_hash_key", "lb_type", "cluster_shard_id", "frame_type",
}

const intKeyPrefix = "ttheader_int_"

// intKeyName is the metadata key of TTHeader integer key k.
func intKeyName(k uint16) string {
	if int(k) < len(intKeyNames) {
		return intKeyNames[k]
	}
	return intKeyPrefix + strconv.Itoa(int(k))
}

// intKeyOf is the TTHeader integer key a metadata key names, if any.
func intKeyOf(name string) (uint16, bool) {
	for i, n := range intKeyNames {
		if n == name {
			return uint16(i), true
		}
	}
	if len(name) > len(intKeyPrefix) && name[:len(intKeyPrefix)] == intKeyPrefix {
		if v, err := strconv.ParseUint(name[len(intKeyPrefix):], 10, 16); err == nil && strconv.Itoa(int(v)) == name[len(intKeyPrefix):] {
			return uint16(v), true
		}
	}
	return 0, false
}

// decodeHeader decodes a THeader or TTHeader frame.
func (c *codec) decodeHeader(buf []byte, msg *codecs.Message, tr transport) (int, error) {
	if len(buf) >= 6 {
		magic := binary.BigEndian.Uint16(buf[4:])
		if tr == tHeader && magic != theaderMagic || tr == tTTHeader && magic != ttheaderMagic {
			return 0, codecs.Errorf(reasonTransport, "magic %#04x on a %v connection", magic, tr)
		}
	}
	if len(buf) < 4 {
		return 0, nil
	}
	size, err := c.frameLen(buf)
	if err != nil {
		return 0, err
	}
	if len(buf) < size {
		return 0, nil
	}
	f := buf[:size:size]
	if size < hdrMetaSize+minFrame {
		return 0, codecs.Errorf(reasonBadHeader, "%v frame of %d bytes", tr, size)
	}
	end := hdrMetaSize + 4*int(binary.BigEndian.Uint16(f[12:]))
	if end > size {
		return 0, codecs.Errorf(reasonBadHeader, "header of %d bytes in a %d-byte frame", end-hdrMetaSize, size)
	}
	c.hdrs = c.hdrs[:0]
	var proto protocol
	lay := &c.lay
	*lay = hdrLayout{blocks: lay.blocks[:0]}
	if tr == tHeader {
		proto, err = c.theader(f, end, lay)
	} else {
		proto, err = c.ttheader(f, end, lay)
	}
	if err != nil {
		c.hdrs = c.hdrs[:0]
		return 0, err
	}
	if lay.zlib {
		if err := c.decodeZlib(f, end, proto, msg); err != nil {
			c.hdrs = c.hdrs[:0]
			return 0, err
		}
		msg.Frame = f
		return size, nil
	}
	payload := end
	inner := false
	if tr == tTTHeader && size-end >= 8 && f[end] != 0x80 && f[end] != compactID &&
		(f[end+4] == 0x80 && f[end+5] == 0x01 || f[end+4] == compactID) {
		// Kitex frames the message inside TTHeader (TTHeaderFramed).
		if n := binary.BigEndian.Uint32(f[end:]); int64(n) != int64(size-end-4) {
			c.hdrs = c.hdrs[:0]
			return 0, codecs.Errorf(reasonBadHeader, "TTHeader payload frame of %d bytes in %d", n, size-end-4)
		}
		payload, inner = end+4, true
	}
	msg.Private[privPayload] = payload
	msg.Private[privHeaderEnd] = end
	if err := c.decodeMessage(f, payload, msg, tr, proto, true); err != nil {
		c.hdrs = c.hdrs[:0]
		return 0, err
	}
	if inner {
		msg.Private[privFlags] |= flagInnerFramed
	}
	if msg.Type == codecs.Request || msg.Type == codecs.Oneway {
		c.innerFramed = inner
	}
	msg.Frame = f
	return size, nil
}

// setHeader records a header key/value; a repeated key keeps its last value.
func (c *codec) setHeader(key, value string) {
	for i := range c.hdrs {
		if c.hdrs[i].Key == key {
			c.hdrs[i].Value = value
			return
		}
	}
	if len(c.hdrs) < maxHeaders {
		c.hdrs = append(c.hdrs, codecs.KV{Key: key, Value: value})
	}
}

// hdrLayout is where the parts of a transport header are, for a rebuild.
type hdrLayout struct {
	zlib      bool      // THeader: the message is zlib-compressed (transform 1)
	prefixEnd int       // end of protocol id and transforms
	blocks    []hdrSpan // info blocks in order (TTHeader: padding excluded)
	walk      bool      // only the layout: key/values are not collected
	restStart int       // THeader: first byte not parsed (padding or an unknown info type)
}

type hdrSpan struct {
	typ        byte
	start, end int
}

func protoOfID(id uint64) (protocol, error) {
	switch id {
	case protoIDBinary:
		return pBinary, nil
	case protoIDCompact:
		return pCompact, nil
	}
	return pAuto, codecs.Errorf(reasonUnsupported, "header protocol id %d (only binary 0 and compact 2 are Thrift)", id)
}

// theader parses an Apache THeader header f[14:end] and its layout into
// lay; its key/values go to c.hdrs unless lay.walk.
func (c *codec) theader(f []byte, end int, lay *hdrLayout) (protocol, error) {
	r := reader{b: f[:end], limit: end}
	bad := func(err error) (protocol, error) {
		if err == errShort {
			return pAuto, codecs.Errorf(reasonBadHeader, "THeader header truncated")
		}
		if pe, ok := err.(*codecs.ProtocolError); ok && pe.Reason != reasonUnsupported && pe.Reason != reasonTransform {
			pe.Reason = reasonBadHeader
		}
		return pAuto, err
	}
	id, off, err := r.uvarint(hdrMetaSize, 5)
	if err != nil {
		return bad(err)
	}
	proto, err := protoOfID(id)
	if err != nil {
		return bad(err)
	}
	n, off, err := r.uvarint(off, 5)
	if err != nil {
		return bad(err)
	}
	if n > uint64(end-off) {
		return bad(codecs.Errorf(reasonBadHeader, "%d transforms", n))
	}
	for range n {
		var t uint64
		if t, off, err = r.uvarint(off, 5); err != nil {
			return bad(err)
		}
		switch {
		case t == transformZlib && !lay.zlib:
			lay.zlib = true
		case t != 0:
			// 2 hmac (dropped by Apache), 3 snappy (C++ only), or zlib twice.
			return bad(codecs.Errorf(reasonTransform, "THeader transform %d (only zlib, once, is supported)", t))
		}
	}
	lay.prefixEnd = off
	for off < end {
		start := off
		var typ uint64
		if typ, off, err = r.uvarint(off, 5); err != nil {
			return bad(err)
		}
		if typ != infoKeyValue {
			// Padding, or an info type Apache's readers stop at too.
			off = start
			break
		}
		var count uint64
		if count, off, err = r.uvarint(off, 5); err != nil {
			return bad(err)
		}
		if count > uint64(end-off)/2 {
			return bad(codecs.Errorf(reasonBadHeader, "%d key/values in a %d-byte header", count, end-hdrMetaSize))
		}
		for range count {
			var k, v []byte
			if k, off, err = r.vstring(off); err != nil {
				return bad(err)
			}
			if v, off, err = r.vstring(off); err != nil {
				return bad(err)
			}
			if !lay.walk {
				c.setHeader(c.strs.String(k), c.strs.String(v))
			}
		}
		lay.blocks = append(lay.blocks, hdrSpan{typ: infoKeyValue, start: start, end: off})
	}
	lay.restStart = off
	return proto, nil
}

// vstring reads a string with a varint length (THeader).
func (r *reader) vstring(off int) ([]byte, int, error) {
	n, off, err := r.uvarint32(off)
	if err != nil {
		return nil, 0, err
	}
	if int64(n) > int64(len(r.b)-off) {
		return nil, 0, codecs.Errorf(reasonBadHeader, "header string of %d bytes past the header's end", n)
	}
	return r.b[off : off+int(n)], off + int(n), nil
}

// u16string reads a string with a uint16 length (TTHeader).
func u16string(b []byte, off int) ([]byte, int, error) {
	if off+2 > len(b) {
		return nil, 0, codecs.Errorf(reasonBadHeader, "TTHeader string length past the header's end")
	}
	n := int(binary.BigEndian.Uint16(b[off:]))
	off += 2
	if off+n > len(b) {
		return nil, 0, codecs.Errorf(reasonBadHeader, "TTHeader string of %d bytes past the header's end", n)
	}
	return b[off : off+n], off + n, nil
}

// ttheader parses a Kitex TTHeader header f[14:end] and its layout into
// lay; its key/values go to c.hdrs unless lay.walk.
func (c *codec) ttheader(f []byte, end int, lay *hdrLayout) (protocol, error) {
	b := f[:end]
	if end-hdrMetaSize < 2 || end-hdrMetaSize > maxTTHeader {
		return pAuto, codecs.Errorf(reasonBadHeader, "TTHeader header of %d bytes", end-hdrMetaSize)
	}
	proto, err := protoOfID(uint64(b[hdrMetaSize]))
	if err != nil {
		return pAuto, err
	}
	n := int(b[hdrMetaSize+1])
	off := hdrMetaSize + 2
	if off+n > end {
		return pAuto, codecs.Errorf(reasonBadHeader, "%d transforms past the header's end", n)
	}
	if n > 0 {
		return pAuto, codecs.Errorf(reasonTransform, "TTHeader transform %d (compressed payloads are not supported)", b[off])
	}
	lay.prefixEnd = off
	for off < end {
		start := off
		typ := b[off]
		off++
		switch typ {
		case infoPadding:
			continue
		case infoKeyValue, infoIntKV:
			if off+2 > end {
				return pAuto, codecs.Errorf(reasonBadHeader, "TTHeader key/value count past the header's end")
			}
			count := int(binary.BigEndian.Uint16(b[off:]))
			off += 2
			for range count {
				var k, v []byte
				var key string
				if typ == infoKeyValue {
					if k, off, err = u16string(b, off); err != nil {
						return pAuto, err
					}
					if !lay.walk {
						key = c.strs.String(k)
					}
				} else {
					if off+2 > end {
						return pAuto, codecs.Errorf(reasonBadHeader, "TTHeader integer key past the header's end")
					}
					if !lay.walk {
						key = intKeyName(binary.BigEndian.Uint16(b[off:]))
						if len(key) > len(intKeyPrefix) && key[:len(intKeyPrefix)] == intKeyPrefix {
							key = c.strs.String([]byte(key))
						}
					}
					off += 2
				}
				if v, off, err = u16string(b, off); err != nil {
					return pAuto, err
				}
				if !lay.walk {
					c.setHeader(key, c.strs.String(v))
				}
			}
		case infoACLToken:
			var v []byte
			if v, off, err = u16string(b, off); err != nil {
				return pAuto, err
			}
			if !lay.walk {
				c.setHeader(aclTokenKey, c.strs.String(v))
			}
		default:
			return pAuto, codecs.Errorf(reasonBadHeader, "TTHeader info id %#x", typ)
		}
		lay.blocks = append(lay.blocks, hdrSpan{typ: typ, start: start, end: off})
	}
	return proto, nil
}

// decodeZlib decodes a THeader frame whose message is zlib-compressed: the
// message is inflated (into a per-connection buffer, at most MaxFrameSize
// bytes) to read its name, type and seqid. Encode passes the frame on
// unchanged while its seqid and headers are; otherwise it sends the
// message inflated (see mutate), which every THeader reader accepts: the
// transforms are chosen per frame.
func (c *codec) decodeZlib(f []byte, end int, proto protocol, msg *codecs.Message) error {
	pl, err := c.inflate(f[end:])
	if err != nil {
		return err
	}
	if err := c.decodeMessage(pl, 0, msg, tHeader, proto, false); err != nil {
		return err
	}
	flags := msg.Private[privFlags] | flagZlib
	if binary.BigEndian.Uint32(f[hdrSeqOff:]) == uint32(msg.ID) {
		flags |= flagHdrSeq
	}
	msg.Private = [4]int{privSeqOff: int(msg.ID), privPayload: end, privHeaderEnd: end, privFlags: flags}
	return nil
}

// inflate decompresses a zlib stream into c.zbuf, refusing more than
// MaxFrameSize bytes of output.
func (c *codec) inflate(b []byte) ([]byte, error) {
	c.zsrc.Reset(b)
	var err error
	if c.zr == nil {
		c.zr, err = zlib.NewReader(&c.zsrc)
	} else {
		err = c.zr.(zlib.Resetter).Reset(&c.zsrc, nil)
	}
	if err != nil {
		return nil, codecs.Errorf(reasonBadBody, "zlib: %v", err)
	}
	out := c.zbuf[:0]
	if cap(out) == 0 {
		out = make([]byte, 0, min(4096, c.maxFrame+1))
	}
	for {
		if len(out) == cap(out) {
			if len(out) > c.maxFrame {
				return nil, codecs.Errorf(reasonTooLarge, "zlib message inflates past %d bytes", c.maxFrame)
			}
			out = append(out, 0)[:len(out)]
			out = out[:len(out):min(cap(out), c.maxFrame+1)]
		}
		n, err := c.zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, codecs.Errorf(reasonBadBody, "zlib: %v", err)
		}
	}
	if len(out) > c.maxFrame {
		return nil, codecs.Errorf(reasonTooLarge, "zlib message inflates past %d bytes", c.maxFrame)
	}
	if cap(out) <= 1<<20 {
		c.zbuf = out // keep small buffers for the next frame
	}
	return out, nil
}
