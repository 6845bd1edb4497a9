// Package thrift is the codec of Apache Thrift RPC, registered as "thrift":
// transports framed, unframed (buffered), Apache THeader and Kitex
// TTHeader; protocols binary (strict and non-strict) and compact. The
// transport and protocol are detected from the first bytes of each
// connection or pinned with Params. See README.md for the metadata keys,
// what mutations do and the limits.
package thrift

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"sync/atomic"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/internal/intern"
)

func init() {
	codecs.Register("thrift", New)
}

const (
	// DefaultMaxFrameSize is Apache Thrift's default maximum frame size
	// (TConfiguration.DEFAULT_MAX_FRAME_SIZE), length prefix included.
	DefaultMaxFrameSize = 16_384_000

	// maxDepth bounds the nesting of structs and containers the unframed
	// transport skips: Apache Thrift's default recursion limit.
	maxDepth = 64

	// maxHeaders bounds how many header key/values become metadata (each
	// costs a linear Set); later ones still pass through untouched.
	maxHeaders = 256

	// minFrame is the smallest message a frame can hold: a compact
	// header with a one-byte seqid, an empty name, then a struct's stop.
	minFrame = 5
)

// ProtocolError reasons.
const (
	reasonUnknownProtocol = "unknown_protocol"
	reasonTransport       = "unexpected_transport"
	reasonProtocol        = "unexpected_protocol"
	reasonBadLength       = "bad_length"
	reasonTooLarge        = "frame_too_large"
	reasonBadHeader       = "bad_header"
	reasonTransform       = "unsupported_transform"
	reasonUnsupported     = "unsupported_protocol"
	reasonBadMessage      = "bad_message"
	reasonBadBody         = "bad_body"
	reasonTooDeep         = "too_deep"
	reasonMutation        = "mutation_rejected"
)

// Metadata keys the codec derives itself; they win over headers of the
// same name.
const (
	keyMethod      = "method"
	keyService     = "service"
	keyMessageType = "message_type"
	keyTransport   = "transport"
	keyProtocol    = "protocol"
)

type transport uint8

const (
	tAuto transport = iota
	tFramed
	tUnframed
	tHeader
	tTTHeader
)

func (t transport) String() string {
	switch t {
	case tFramed:
		return "framed"
	case tUnframed:
		return "unframed"
	case tHeader:
		return "header"
	case tTTHeader:
		return "ttheader"
	}
	return "auto"
}

type protocol uint8

const (
	pAuto protocol = iota
	pBinary
	pCompact
)

func (p protocol) String() string {
	switch p {
	case pBinary:
		return "binary"
	case pCompact:
		return "compact"
	}
	return "auto"
}

var messageTypeNames = [...]string{msgCall: "call", msgReply: "reply", msgException: "exception", msgOneway: "oneway"}

// Indexes of Message.Private.
const (
	// privSeqOff is the frame offset of the seqid in the Thrift message.
	privSeqOff = iota
	// privPayload is the frame offset where the Thrift message starts.
	privPayload
	// privHeaderEnd is, for THeader and TTHeader, the offset where the
	// header's info section ends (0 if the frame has no headers).
	privHeaderEnd
	// privFlags packs the transport, protocol, seqid length and whether
	// the transport header repeats the seqid (see packFlags).
	privFlags
)

func packFlags(t transport, p protocol, seqLen int, hdrSeq bool) int {
	f := int(t) | int(p)<<4 | seqLen<<8
	if hdrSeq {
		f |= flagHdrSeq
	}
	return f
}

const (
	flagHdrSeq = 1 << 12
	// flagInnerFramed: the TTHeader payload is itself framed (a 4-byte
	// length before the message), as Kitex clients write it (TTHeaderFramed).
	flagInnerFramed = 1 << 13
	// flagStrict: binary written with the version word.
	flagStrict = 1 << 14
	// flagZlib: a THeader message compressed with zlib; privSeqOff then
	// holds the seqid as received (the seqid lies inside the compressed bytes).
	flagZlib = 1 << 15
)

func unpackFlags(f int) (t transport, p protocol, seqLen int, hdrSeq bool) {
	return transport(f & 0xf), protocol(f >> 4 & 0xf), f >> 8 & 0xf, f&flagHdrSeq != 0
}

// Params.
const (
	paramTransport  = "transport"
	paramProtocol   = "protocol"
	paramHeaderless = "headerless_mutations"
	paramOneway     = "oneway_methods"
)

var ignoredMutations atomic.Uint64

// IgnoredMutations counts the frames of headerless transports (framed,
// unframed) whose mutations were dropped, process-wide: such frames have
// nowhere to carry key/values. See the headerless_mutations param.
func IgnoredMutations() uint64 { return ignoredMutations.Load() }

// New makes a Thrift codec for one connection. Params (all optional):
//
//	transport: auto (default) | framed | unframed (alias buffered) | header | ttheader
//	protocol: auto (default) | binary | compact
//	headerless_mutations: ignore (default) | reject
//	oneway_methods: comma-separated method names whose CALL messages are
//	    oneway (Apache Thrift Go clients send oneway calls as CALL)
func New(opts codecs.Options) (codecs.Codec, error) {
	limit := opts.MaxFrameSize
	switch {
	case limit == 0:
		limit = DefaultMaxFrameSize
	case limit < minFrame:
		return nil, fmt.Errorf("thrift: MaxFrameSize %d: must be 0 (default %d) or at least %d", limit, DefaultMaxFrameSize, minFrame)
	case limit > math.MaxInt32:
		limit = math.MaxInt32
	}
	c := &codec{maxFrame: limit}
	for k, v := range opts.Params {
		switch k {
		case paramTransport:
			switch v {
			case "", "auto":
			case "framed":
				c.pinTr = tFramed
			case "unframed", "buffered":
				c.pinTr = tUnframed
			case "header", "theader":
				c.pinTr = tHeader
			case "ttheader":
				c.pinTr = tTTHeader
			default:
				return nil, fmt.Errorf("thrift: param transport %q: want auto, framed, unframed, header or ttheader", v)
			}
		case paramProtocol:
			switch v {
			case "", "auto":
			case "binary":
				c.pinProto = pBinary
			case "compact":
				c.pinProto = pCompact
			default:
				return nil, fmt.Errorf("thrift: param protocol %q: want auto, binary or compact", v)
			}
		case paramHeaderless:
			switch v {
			case "", "ignore":
			case "reject":
				c.rejectHeaderless = true
			default:
				return nil, fmt.Errorf("thrift: param headerless_mutations %q: want ignore or reject", v)
			}
		case paramOneway:
			for _, m := range strings.Split(v, ",") {
				if m = strings.TrimSpace(m); m != "" {
					c.oneway = append(c.oneway, m)
				}
			}
		default:
			return nil, fmt.Errorf("thrift: unknown param %q (known: transport, protocol, headerless_mutations, oneway_methods)", k)
		}
	}
	return c, nil
}

type codec struct {
	maxFrame         int
	pinTr            transport
	pinProto         protocol
	rejectHeaderless bool
	// oneway lists methods whose CALL messages expect no reply: Apache
	// Thrift Go's clients write oneway calls with type CALL, and only the
	// IDL tells them apart.
	oneway []string

	// The flavor of the last frame decoded.
	tr    transport
	proto protocol
	// strict says whether the last binary request was strict, and
	// innerFramed whether the last TTHeader request framed its payload, so
	// that a local reply is written the way the client writes.
	strict      bool
	innerFramed bool

	// want is how many bytes the unframed frame at the front of the buffer
	// needs at least, learnt by the last scan that ran out of bytes: until
	// that many are buffered, scanning again cannot succeed.
	want int

	// hdrs collects a frame's transport header key/values before its
	// message is decoded (scratch, reused).
	hdrs codecs.Metadata

	// lay is the scratch layout of the last THeader/TTHeader header.
	lay hdrLayout

	// zlib state for compressed THeader messages, reused per connection.
	zr   io.ReadCloser
	zsrc bytes.Reader
	zbuf []byte

	strs intern.Table
}

// Flavor names the wire variant of the last frame decoded, e.g.
// "framed/binary" or "ttheader/binary" ("" before the first). Not every
// server reads several variants on one connection (a framed-only server
// reads an unframed request as a garbage length and closes the connection,
// failing every request on it): the proxy keeps one upstream pool per
// endpoint and flavor, taking the flavor right after decoding a request.
func (c *codec) Flavor() string {
	if c.tr == tAuto {
		return ""
	}
	return flavors[c.tr][c.proto]
}

var flavors = func() (f [5][3]string) {
	for t := tFramed; t <= tTTHeader; t++ {
		for p := pBinary; p <= pCompact; p++ {
			f[t][p] = t.String() + "/" + p.String()
		}
	}
	return f
}()

// Decode implements codecs.Codec. Unless pinned by params, the transport
// and protocol are detected on every frame, as Apache Thrift's THeader
// server does: a shared upstream connection may carry the answers of
// clients of several flavors (see Flavor).
func (c *codec) Decode(buf []byte, msg *codecs.Message) (int, error) {
	if len(buf) == 0 || len(buf) < c.want {
		return 0, nil
	}
	tr, err := c.detect(buf)
	if tr == tAuto || err != nil {
		return 0, err
	}
	msg.Metadata = msg.Metadata[:0]
	msg.Status = codecs.StatusOK
	msg.Code = 0
	msg.Private = [4]int{}
	c.strs.Frame()
	var n int
	switch tr {
	case tFramed:
		n, err = c.decodeFramed(buf, msg)
	case tUnframed:
		n, err = c.decodeUnframed(buf, msg)
	case tHeader, tTTHeader:
		n, err = c.decodeHeader(buf, msg, tr)
	}
	if err != nil || n == 0 {
		if err != nil {
			c.want = 0
		}
		return 0, err
	}
	c.want = 0
	c.tr = tr
	_, c.proto, _, _ = unpackFlags(msg.Private[privFlags])
	return n, nil
}

// detect picks the transport from the first bytes of a connection:
//
//	80 01 .. ..            unframed binary (strict)
//	82 ..                  unframed compact
//	LL LL LL LL 0f ff      THeader
//	LL LL LL LL 10 00      Kitex TTHeader
//	LL LL LL LL 80|82|00   framed (strict binary, compact, non-strict binary)
//	NN NN NN NN c          unframed non-strict binary: a name length, then
//	                       the name's first character
func (c *codec) detect(buf []byte) (transport, error) {
	if c.pinTr != tAuto {
		return c.pinTr, nil
	}
	if b := buf[0]; b == 0x80 || b == compactID {
		return tUnframed, nil
	}
	if len(buf) < 4 {
		return tAuto, nil
	}
	size := binary.BigEndian.Uint32(buf)
	if size > math.MaxInt32 || int(size) > c.maxFrame {
		return tAuto, codecs.Errorf(reasonUnknownProtocol, "first bytes %#x are neither a Thrift message nor a frame length within %d bytes", buf[:4], c.maxFrame)
	}
	if len(buf) < 6 {
		return tAuto, nil
	}
	switch {
	case buf[4] == 0x0f && buf[5] == 0xff:
		return tHeader, nil
	case buf[4] == 0x10 && buf[5] == 0x00:
		return tTTHeader, nil
	case buf[4] == 0x80 || buf[4] == compactID || buf[4] == 0x00:
		return tFramed, nil
	}
	return tUnframed, nil
}

// FrameSize implements codecs.FrameSizer: the length prefix of the framed
// and header transports (unframed messages carry none).
func (c *codec) FrameSize(buf []byte) int {
	if len(buf) < 6 {
		return 0
	}
	tr, err := c.detect(buf)
	if err != nil || (tr != tFramed && tr != tHeader && tr != tTTHeader) {
		return 0
	}
	n, err := c.frameLen(buf)
	if err != nil {
		return 0
	}
	return n
}

func (c *codec) frameLen(buf []byte) (int, error) {
	size := int64(binary.BigEndian.Uint32(buf))
	if size > math.MaxInt32 {
		return 0, codecs.Errorf(reasonBadLength, "negative frame length %d", int32(size))
	}
	if size+4 > int64(c.maxFrame) {
		return 0, codecs.Errorf(reasonTooLarge, "frame of %d bytes, limit %d", size+4, c.maxFrame)
	}
	if size < minFrame {
		return 0, codecs.Errorf(reasonBadLength, "frame length %d: no Thrift message fits", size)
	}
	return int(size) + 4, nil
}

func (c *codec) decodeFramed(buf []byte, msg *codecs.Message) (int, error) {
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
	if err := c.decodeMessage(f, 4, msg, tFramed, pAuto, false); err != nil {
		return 0, err
	}
	msg.Frame = f
	return size, nil
}

func (c *codec) decodeUnframed(buf []byte, msg *codecs.Message) (int, error) {
	r := reader{b: buf, limit: c.maxFrame}
	h, err := c.header(&r, 0, pAuto)
	if err == nil {
		var end int
		if end, err = r.skipStruct(h.bodyOffset, h.proto); err == nil {
			f := buf[:end:end]
			if err := c.finish(f, h, &r, msg, tUnframed, false); err != nil {
				return 0, err
			}
			msg.Frame = f
			return end, nil
		}
	}
	if err == errShort {
		if len(buf) > c.maxFrame {
			// Cannot happen (has() refuses reads past the limit), but a
			// frame must never make the proxy hold more than the limit.
			return 0, codecs.Errorf(reasonTooLarge, "unframed message longer than %d bytes", c.maxFrame)
		}
		c.want = r.need
		return 0, nil
	}
	return 0, err
}

// header reads the Thrift message header at off and checks its protocol
// against the one pinned (by params, the transport header or the
// connection's first frame).
func (c *codec) header(r *reader, off int, want protocol) (msgHeader, error) {
	h, err := r.message(off)
	if err != nil {
		return h, err
	}
	if want == pAuto {
		want = c.pinProto
	}
	if want != pAuto && h.proto != want {
		return h, codecs.Errorf(reasonProtocol, "a %v message where %v is expected", h.proto, want)
	}
	return h, nil
}

// decodeMessage decodes the Thrift message that fills f[off:] (a frame of
// known length). want is the protocol the transport header announced.
func (c *codec) decodeMessage(f []byte, off int, msg *codecs.Message, tr transport, want protocol, hdrSeq bool) error {
	// No limit: the frame's length was checked; running past its end is
	// a malformed message, not a large one.
	r := reader{b: f, limit: math.MaxInt32}
	h, err := c.header(&r, off, want)
	if err == errShort {
		return codecs.Errorf(reasonBadMessage, "message header runs past the end of its %d-byte frame", len(f))
	}
	if err != nil {
		return err
	}
	return c.finish(f, h, &r, msg, tr, hdrSeq)
}

// finish fills msg from a decoded message header.
func (c *codec) finish(f []byte, h msgHeader, r *reader, msg *codecs.Message, tr transport, hdrSeq bool) error {
	name := c.strs.String(f[h.nameStart:h.nameEnd])
	switch h.typ {
	case msgCall:
		msg.Type = codecs.Request
		if c.isOneway(name) {
			msg.Type = codecs.Oneway
		}
	case msgOneway:
		msg.Type = codecs.Oneway
	case msgReply:
		msg.Type = codecs.Response
		st, err := r.replyStatus(h.bodyOffset, h.proto)
		if err != nil {
			return codecs.Errorf(reasonBadBody, "reply without a result struct")
		}
		msg.Status = st
	case msgException:
		msg.Type = codecs.Response
		msg.Status = codecs.StatusError
		msg.Code = r.exceptionType(h.bodyOffset, h.proto)
	}
	if h.proto == pBinary && (h.typ == msgCall || h.typ == msgOneway) {
		c.strict = h.strict
	}
	strictFlag := 0
	if h.strict {
		strictFlag = flagStrict
	}
	msg.ID = uint64(h.seqID)
	if hdrSeq {
		// The transport header repeats the seqid: keep both in step only
		// when they agree, so that rewriting and restoring the id gives
		// back the frame byte for byte.
		hdrSeq = binary.BigEndian.Uint32(f[8:]) == h.seqID
	}
	payload := msg.Private[privPayload]
	if tr == tFramed {
		payload = 4
	} else if tr == tUnframed {
		payload = 0
	}
	msg.Private[privSeqOff] = h.seqOff
	msg.Private[privPayload] = payload
	msg.Private[privFlags] = packFlags(tr, h.proto, h.seqLen, hdrSeq) | strictFlag

	// The codec's own keys first: headers cannot override them.
	md := msg.Metadata[:0]
	if svc, method, ok := strings.Cut(name, ":"); ok {
		md = append(md, codecs.KV{Key: keyMethod, Value: method}, codecs.KV{Key: keyService, Value: svc})
	} else {
		md = append(md, codecs.KV{Key: keyMethod, Value: name})
	}
	md = append(md,
		codecs.KV{Key: keyMessageType, Value: messageTypeNames[h.typ]},
		codecs.KV{Key: keyTransport, Value: tr.String()},
		codecs.KV{Key: keyProtocol, Value: h.proto.String()},
	)
	fixed := len(md)
	// Headers decoded before the message sit after the fixed keys.
	md = append(md, c.hdrs...)
	c.hdrs = c.hdrs[:0]
	msg.Metadata = dedupe(md, fixed)
	return nil
}

// isOneway says whether a CALL of the named method is oneway by config
// (the full name, or the method part of "Service:method").
func (c *codec) isOneway(name string) bool {
	if len(c.oneway) == 0 {
		return false
	}
	_, method, _ := strings.Cut(name, ":")
	for _, m := range c.oneway {
		if m == name || m == method {
			return true
		}
	}
	return false
}

// dedupe drops headers that repeat a fixed key (the codec's own wins).
func dedupe(md codecs.Metadata, fixed int) codecs.Metadata {
	out := md[:fixed]
next:
	for _, kv := range md[fixed:] {
		for i := range fixed {
			if md[i].Key == kv.Key {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// Encode implements codecs.Codec. Without mutations (or on a transport
// without headers) it patches the seqid into the frame in place and
// returns it: no copy, no allocation, unless a compact seqid needs a
// longer varint than the frame has room for.
func (c *codec) Encode(msg *codecs.Message) ([]byte, error) {
	f := msg.Frame
	tr, p, seqLen, hdrSeq := unpackFlags(msg.Private[privFlags])
	if tr == tAuto || len(f) == 0 {
		return nil, fmt.Errorf("thrift: encode: message has no decoded Thrift frame")
	}
	if msg.ID > math.MaxUint32 {
		return nil, fmt.Errorf("thrift: encode: id %d does not fit a seqid (32 bits)", msg.ID)
	}
	id := uint32(msg.ID)
	if msg.Private[privFlags]&flagZlib != 0 {
		if len(msg.Mutations) == 0 && len(msg.Removals) == 0 && id == uint32(msg.Private[privSeqOff]) {
			return f, nil
		}
		return c.mutate(msg, tr, p, seqLen, hdrSeq)
	}
	if (tr == tHeader || tr == tTTHeader) && len(msg.Removals) > 0 {
		return c.mutate(msg, tr, p, seqLen, hdrSeq)
	}
	// Removals on a headerless transport have nothing to remove.
	if len(msg.Mutations) > 0 {
		switch tr {
		case tHeader, tTTHeader:
			return c.mutate(msg, tr, p, seqLen, hdrSeq)
		default:
			if c.rejectHeaderless {
				return nil, codecs.Errorf(reasonMutation, "%v transport carries no headers for mutations %v", tr, msg.Mutations)
			}
			ignoredMutations.Add(1)
		}
	}
	off := msg.Private[privSeqOff]
	if hdrSeq {
		binary.BigEndian.PutUint32(f[8:], id)
	}
	if p == pBinary {
		binary.BigEndian.PutUint32(f[off:], id)
		return f, nil
	}
	if varintLen(id) <= seqLen {
		putVarint(f[off:off+seqLen], id)
		return f, nil
	}
	// The new seqid needs a longer varint: build a new frame and leave
	// msg.Frame as it is (its offsets stay valid for the next Encode).
	out := make([]byte, 0, len(f)+5)
	out = append(out, f[:off]...)
	out = appendVarint(out, id)
	out = append(out, f[off+seqLen:]...)
	if msg.Private[privFlags]&flagInnerFramed != 0 {
		pl := msg.Private[privPayload]
		binary.BigEndian.PutUint32(out[pl-4:], uint32(len(out)-pl))
	}
	if err := c.fixLength(out, tr); err != nil {
		return nil, err
	}
	return out, nil
}

// fixLength rewrites the length prefix of a rebuilt frame.
func (c *codec) fixLength(out []byte, tr transport) error {
	if len(out) > c.maxFrame {
		return codecs.Errorf(reasonTooLarge, "encoded frame of %d bytes, limit %d", len(out), c.maxFrame)
	}
	if tr != tUnframed {
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	}
	return nil
}
