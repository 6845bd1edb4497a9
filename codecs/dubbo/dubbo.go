// Package dubbo is the codec of the Dubbo 2 protocol ("dubbo://" over TCP)
// with hessian2 bodies, registered as "dubbo". See README.md for what it
// decodes, the metadata keys it offers and its limits.
package dubbo

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"github.com/breeze-mesh/breeze/codecs"
	"github.com/breeze-mesh/breeze/codecs/internal/intern"
)

func init() {
	codecs.Register("dubbo", New)
}

const (
	headerLen = 16
	magicHigh = 0xda
	magicLow  = 0xbb

	flagRequest = 0x80
	flagTwoWay  = 0x40
	flagEvent   = 0x20
	serialMask  = 0x1f
	hessian2ID  = 2

	// DefaultMaxFrameSize is a 16-byte header plus Java Dubbo's default
	// payload limit of 8 MiB, so that the proxy accepts what Java accepts.
	DefaultMaxFrameSize = headerLen + 8<<20

	// maxAttachments bounds how many attachments become metadata. Setting
	// one is linear in the metadata already there, so an unbounded count
	// would make one hostile frame cost quadratic time. Later attachments
	// still pass through untouched.
	maxAttachments = 256
)

// Response status bytes (Java's org.apache.dubbo.remoting.exchange.Response).
const (
	statusOK                = 20
	statusServerTimeout     = 31
	statusBadRequest        = 40
	statusServiceNotFound   = 60
	statusServerError       = 80
	statusThreadPoolExhaust = 100
)

// Result types that open the body of a status-20 response.
const (
	resultException = iota
	resultValue
	resultNull
	resultExceptionWithAttachments
	resultValueWithAttachments
	resultNullWithAttachments
)

// ProtocolError reasons.
const (
	reasonBadMagic      = "bad_magic"
	reasonBadLength     = "bad_length"
	reasonTooLarge      = "frame_too_large"
	reasonSerialization = "unsupported_serialization"
	reasonBadBody       = "bad_body"
	reasonBadEvent      = "unsupported_event"
)

// Metadata keys decoded from the request body rather than the attachments.
const (
	keyDubbo      = "dubbo"
	keyInterface  = "interface"
	keyVersion    = "version"
	keyMethod     = "method"
	keyParamTypes = "parameter_types"
	// keyGroup is an attachment only, but like the body fields it names
	// the service: empty means none.
	keyGroup = "group"
)

// unversioned is the service version Apache Dubbo Java writes, in the body
// and the version attachment, for a service that has none (ProtocolUtils
// treats it as no version); dubbo-go writes "".
const unversioned = "0.0.0"

// isNone reports whether a request value means "none" for its key, so
// that it is not offered: empty body fields and empty attachments of the
// same names (the README's rule), and Java's "0.0.0" version. One route
// condition (version present: false) then catches an unversioned call from
// every client. Other attachments are offered even when empty.
func isNone(key, value string) bool {
	switch key {
	case keyVersion:
		return value == "" || value == unversioned
	case keyDubbo, keyInterface, keyMethod, keyParamTypes, keyGroup:
		return value == ""
	}
	return false
}

// Indexes of Message.Private.
const (
	// privAttStart and privAttEnd delimit the attachments map in the frame
	// (equal when the frame has none and Encode would insert one there;
	// privAttEnd is 0 when the message cannot carry attachments at all).
	privAttStart = iota
	privAttEnd
	// privResultType is the frame offset of a response's one-byte result
	// type, which Encode turns from 0-2 into 3-5 when it adds attachments.
	privResultType
	// privClassDefs counts the class definitions before the attachments,
	// so that Encode can walk the map alone (see mergeAttachments).
	privClassDefs
)

// New makes a Dubbo codec for one connection. It takes no Params.
func New(opts codecs.Options) (codecs.Codec, error) {
	limit := opts.MaxFrameSize
	switch {
	case limit == 0:
		limit = DefaultMaxFrameSize
	case limit < headerLen+1:
		return nil, fmt.Errorf("dubbo: MaxFrameSize %d: must be 0 (default %d) or at least %d", limit, DefaultMaxFrameSize, headerLen+1)
	case limit > headerLen+math.MaxInt32:
		limit = headerLen + math.MaxInt32
	}
	for k := range opts.Params {
		return nil, fmt.Errorf("dubbo: unknown param %q: the dubbo codec takes no params", k)
	}
	// The string table is made on first use: an idle connection (the
	// common case at 10,000 connections) should cost only this struct.
	return &codec{maxFrame: limit}, nil
}

type codec struct {
	maxFrame int
	sc       scanner
	strs     intern.Table
	hessian  hessianDecoder
	// clientVersion is the dubbo version of the last request decoded on
	// this connection, and respAtt whether it reads responses with
	// attachments (0 before the first request; see Encode).
	clientVersion string
	respAtt       int8
}

var ignoredMutations atomic.Uint64

// IgnoredMutations counts, process-wide, the frames whose mutations Encode
// dropped because they have nowhere to carry attachments: heartbeats and
// other events, responses whose status is not 20 (OK), and status-20
// responses without attachments to a client that cannot read them (see
// README.md, "Encode and mutations").
func IgnoredMutations() uint64 { return ignoredMutations.Load() }

// FrameSize implements codecs.FrameSizer: the header's body length.
func (c *codec) FrameSize(buf []byte) int {
	if len(buf) < headerLen || buf[0] != magicHigh || buf[1] != magicLow {
		return 0
	}
	bodyLen := int32(binary.BigEndian.Uint32(buf[12:]))
	if size := headerLen + int(bodyLen); bodyLen >= 0 && size <= c.maxFrame {
		return size
	}
	return 0
}

// Decode implements codecs.Codec.
func (c *codec) Decode(buf []byte, msg *codecs.Message) (int, error) {
	// Check the magic as soon as it arrives so that a client speaking
	// another protocol fails at once rather than after 16 bytes.
	if len(buf) > 0 && buf[0] != magicHigh || len(buf) > 1 && buf[1] != magicLow {
		return 0, codecs.Errorf(reasonBadMagic, "first bytes %#x, want 0xdabb", buf[:min(len(buf), 2)])
	}
	if len(buf) < headerLen {
		return 0, nil
	}
	bodyLen := int32(binary.BigEndian.Uint32(buf[12:]))
	if bodyLen < 0 {
		return 0, codecs.Errorf(reasonBadLength, "negative body length %d", bodyLen)
	}
	size := headerLen + int(bodyLen)
	if size > c.maxFrame {
		return 0, codecs.Errorf(reasonTooLarge, "frame of %d bytes, limit %d", size, c.maxFrame)
	}
	if len(buf) < size {
		return 0, nil
	}
	msg.Frame = buf[:size:size]
	c.strs.Frame()
	msg.ID = binary.BigEndian.Uint64(buf[4:])
	msg.Status = codecs.StatusOK
	msg.Metadata = msg.Metadata[:0]
	msg.Private = [4]int{}
	var err error
	flag := buf[2]
	switch {
	case flag&flagEvent != 0:
		err = c.decodeEvent(msg)
	case flag&flagRequest != 0:
		msg.Type = codecs.Request
		if flag&flagTwoWay == 0 {
			msg.Type = codecs.Oneway
		}
		err = c.decodeRequest(msg)
	default:
		err = c.decodeResponse(msg)
	}
	if err != nil {
		return 0, err
	}
	return size, nil
}

func checkHessian2(f []byte, what string) error {
	if id := f[2] & serialMask; id != hessian2ID {
		return codecs.Errorf(reasonSerialization, "%s with serialization id %d; only hessian2 (2) bodies can be decoded", what, id)
	}
	return nil
}

// decodeEvent classifies an event by its data: Java and dubbo-go send null
// for a heartbeat and "R" (READONLY) when a provider shuts down. Dubbo 3
// also knows "H" (the heartbeat of serializations that cannot write null)
// and "W" (WRITEABLE, the provider is back); the proxy has no use for "W",
// and answering it like a heartbeat is harmless, unlike closing the
// connection while it drains.
func (c *codec) decodeEvent(msg *codecs.Message) error {
	f := msg.Frame
	if f[2]&flagRequest == 0 {
		// The data of a heartbeat reply is not needed: not parsed.
		msg.Type = codecs.HeartbeatReply
		if f[3] != statusOK {
			msg.Status = codecs.StatusError
		}
		return nil
	}
	if err := checkHessian2(f, "event"); err != nil {
		return err
	}
	body := f[headerLen:]
	if len(body) == 0 || body[0] == 'N' {
		msg.Type = codecs.Heartbeat
		return nil
	}
	c.sc.reset(body)
	v, err := c.sc.str(0)
	if err != nil {
		return codecs.Errorf(reasonBadEvent, "event data is neither null nor a string: %v", err)
	}
	data, err := c.text(v)
	if err != nil {
		return err
	}
	switch data {
	case "R":
		msg.Type = codecs.GoAway
	case "H", "W":
		msg.Type = codecs.Heartbeat
	default:
		return codecs.Errorf(reasonBadEvent, "event data %q", trim(data))
	}
	return nil
}

// decodeRequest reads the body: dubbo version, service path, service
// version, method, parameter-types descriptor, the arguments (skipped, never
// built), then the attachments map.
func (c *codec) decodeRequest(msg *codecs.Message) error {
	f := msg.Frame
	if err := checkHessian2(f, "request"); err != nil {
		return err
	}
	s := &c.sc
	s.reset(f[headerLen:])
	var fields [5]string // dubbo, interface, version, method, parameter_types
	off := 0
	for i := range fields {
		v, err := s.str(off)
		if err != nil {
			return err
		}
		if fields[i], err = c.text(v); err != nil {
			return err
		}
		off = v.end
	}
	nargs, err := countArgs(fields[4])
	if err != nil {
		return err
	}
	method := fields[3]
	for i := 0; i < nargs; i++ {
		if i == 0 && (method == "$invoke" || method == "$invokeAsync") {
			// A generic call names the real method in its first argument;
			// route on that, as Java's own routers do (RpcUtils.getMethodName).
			if v, err := s.str(off); err == nil && !v.null {
				if m, err := c.text(v); err == nil && m != "" {
					method = m
				}
			}
		}
		if off, err = s.skip(off); err != nil {
			return err
		}
	}
	fields[3] = method
	c.noteVersion(fields[0])

	md := msg.Metadata
	for i, key := range [...]string{keyDubbo, keyInterface, keyVersion, keyMethod, keyParamTypes} {
		if !isNone(key, fields[i]) {
			md = append(md, codecs.KV{Key: key, Value: fields[i]})
		}
	}
	msg.Metadata = md
	defs := len(s.defs)
	start := off
	end := off
	// A body that ends after the arguments has no map: accept it (the
	// provider decides); Encode inserts one if a mutation needs it.
	if off < len(s.b) {
		if end, err = c.attachments(off, msg, len(md)); err != nil {
			return err
		}
		// After the whole map: the last pair of a key is the one that counts.
		dropNone(msg, len(md))
	}
	msg.Private = [4]int{privAttStart: headerLen + start, privAttEnd: headerLen + end, privClassDefs: defs}
	return nil
}

// noteVersion records the dubbo version of a request decoded on this
// connection: it says whether the client reads responses with attachments.
func (c *codec) noteVersion(v string) {
	if c.respAtt != 0 && v == c.clientVersion {
		return
	}
	c.clientVersion = v
	c.respAtt = -1
	if supportsResponseAttachments(v) {
		c.respAtt = 1
	}
}

// supportsResponseAttachments reports whether a client that sends dubbo
// version v reads the result types 3-5 (responses with attachments). It is
// Java's Version.isSupportResponseAttachment: protocol versions 2.0.2 to
// 2.0.99. Dubbo 2.6.2 and older put their release version there (2.5.3,
// 2.6.2) and read only 0-2; Dubbo 2.6.3 and later and dubbo-go send 2.0.2.
// A Java provider answers with 3-5 exactly when this holds for the request.
func supportsResponseAttachments(v string) bool {
	if v == "" {
		return false
	}
	// As Java's Version.getIntVersion: each dot-separated part's leading
	// digits weigh 100 times the next part's; three parts gain a last
	// factor of 100 ("2.0.2" is 2000200).
	var n int64
	parts := strings.Count(v, ".") + 1
	if parts > 6 {
		return false
	}
	i := 0
	for p := range strings.SplitSeq(v, ".") {
		var x int64
		for d := 0; d < len(p) && p[d] >= '0' && p[d] <= '9'; d++ {
			if d == 6 {
				return false // beyond any protocol version
			}
			x = x*10 + int64(p[d]-'0')
		}
		for range parts - i - 1 {
			x *= 100
		}
		n += x
		i++
	}
	if parts == 3 {
		n *= 100
	}
	return n >= 2000200 && n <= 2009900
}

// countArgs counts the parameters of a JVM method descriptor such as
// "Ljava/lang/String;[IJ". dubbo-go writes "V" for a nil argument.
func countArgs(desc string) (int, error) {
	n := 0
	for i := 0; i < len(desc); n++ {
		for i < len(desc) && desc[i] == '[' {
			i++
		}
		if i == len(desc) {
			return 0, codecs.Errorf(reasonBadBody, "parameter types %q: array of nothing", trim(desc))
		}
		switch desc[i] {
		case 'V', 'Z', 'B', 'C', 'D', 'F', 'I', 'J', 'S':
			i++
		case 'L':
			j := strings.IndexByte(desc[i:], ';')
			if j < 0 {
				return 0, codecs.Errorf(reasonBadBody, "parameter types %q: class name without ';'", trim(desc))
			}
			i += j + 1
		default:
			return 0, codecs.Errorf(reasonBadBody, "parameter types %q: unexpected %q", trim(desc), desc[i])
		}
	}
	return n, nil
}

// decodeResponse maps the status byte and, for status 20, reads the result
// type and the attachments that types 3-5 carry after the result.
func (c *codec) decodeResponse(msg *codecs.Message) error {
	f := msg.Frame
	msg.Type = codecs.Response
	msg.Code = uint32(f[3])
	if f[3] != statusOK {
		// The body is an error message the proxy has no use for.
		msg.Status = codecs.StatusError
		return nil
	}
	if err := checkHessian2(f, "response"); err != nil {
		return err
	}
	s := &c.sc
	s.reset(f[headerLen:])
	rt, off, err := s.readInt(0)
	if err != nil {
		return err
	}
	if rt < resultException || rt > resultNullWithAttachments {
		return codecs.Errorf(reasonBadBody, "response result type %d", rt)
	}
	if rt == resultException || rt == resultExceptionWithAttachments {
		msg.Status = codecs.StatusAppError
	}
	if rt != resultNull && rt != resultNullWithAttachments {
		if off, err = s.skip(off); err != nil {
			return err
		}
	}
	end := off
	if rt >= resultExceptionWithAttachments {
		if end, err = c.attachments(off, msg, 0); err != nil {
			return err
		}
	}
	msg.Private = [4]int{privAttStart: headerLen + off, privAttEnd: headerLen + end, privClassDefs: len(s.defs)}
	if rt < resultExceptionWithAttachments {
		// Adding attachments turns result type 0-2 into 3-5: in place only
		// for the one-byte int that Java and dubbo-go write.
		if f[headerLen] == 0x90+byte(rt) {
			msg.Private[privResultType] = headerLen
		} else {
			msg.Private[privAttEnd] = 0
		}
	}
	return nil
}

// attachments reads the map at body offset off into msg.Metadata and
// returns where it ends. The first fixed entries of the metadata come from
// the request body and win over attachments of the same name.
func (c *codec) attachments(off int, msg *codecs.Message, fixed int) (int, error) {
	s := &c.sc
	b := s.b
	if off >= len(b) {
		return 0, s.truncated(off)
	}
	var err error
	switch b[off] {
	case 'N':
		return off + 1, nil
	case 'H':
		off++
	case 'M':
		if off, err = s.skipType(off + 1); err != nil {
			return 0, err
		}
	default:
		return 0, s.invalid(off, "attachments are not a map")
	}
	md := msg.Metadata
	for n := 0; ; n++ {
		if off >= len(b) {
			return 0, s.truncated(off)
		}
		if b[off] == 'Z' {
			msg.Metadata = md
			return off + 1, nil
		}
		var key string
		keyOK := false
		if isStringTag(b[off]) {
			k, err := s.str(off)
			if err != nil {
				return 0, err
			}
			if key, err = c.text(k); err != nil {
				return 0, err
			}
			keyOK = true
			off = k.end
		} else if off, err = s.skip(off); err != nil {
			return 0, err
		}
		value, valueOK, end, err := c.value(off)
		if err != nil {
			return 0, err
		}
		off = end
		if keyOK && valueOK && n < maxAttachments {
			md = setAttachment(md, fixed, key, value)
		}
	}
}

// dropNone removes the attachments after the first fixed (body) entries
// whose values mean none (isNone).
func dropNone(msg *codecs.Message, fixed int) {
	md := msg.Metadata
	kept := md[:fixed]
	for _, kv := range md[fixed:] {
		if !isNone(kv.Key, kv.Value) {
			kept = append(kept, kv)
		}
	}
	msg.Metadata = kept
}

func setAttachment(md codecs.Metadata, fixed int, key, value string) codecs.Metadata {
	for i := range md {
		if md[i].Key == key {
			if i >= fixed {
				md[i].Value = value
			}
			return md
		}
	}
	return append(md, codecs.KV{Key: key, Value: value})
}

// value reads an attachment value: strings as they are, numbers and
// booleans in their usual text form; other values (null, dates, binary,
// lists, maps, objects) are skipped and offer no metadata.
func (c *codec) value(off int) (string, bool, int, error) {
	s := &c.sc
	if off >= len(s.b) {
		return "", false, 0, s.truncated(off)
	}
	tag := s.b[off]
	if isStringTag(tag) {
		v, err := s.str(off)
		if err != nil {
			return "", false, 0, err
		}
		text, err := c.text(v)
		return text, err == nil, v.end, err
	}
	end, err := s.skip(off)
	if err != nil {
		return "", false, 0, err
	}
	text, ok, err := c.scalar(s.b[off:end])
	return text, ok, end, err
}

// trim shortens a hostile string before it goes into an error message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Encode implements codecs.Codec. Without mutations it patches the id into
// the frame in place and returns it: no copy, no allocation.
func (c *codec) Encode(msg *codecs.Message) ([]byte, error) {
	f := msg.Frame
	if len(f) < headerLen {
		return nil, fmt.Errorf("dubbo: encode: message has a %d-byte frame, not a decoded Dubbo frame", len(f))
	}
	binary.BigEndian.PutUint64(f[4:], msg.ID)
	if len(msg.Mutations) == 0 && len(msg.Removals) == 0 {
		return f, nil
	}
	noMap := msg.Private[privResultType] != 0 // a response without attachments (result type 0-2)
	if msg.Private[privAttEnd] == 0 || noMap && (c.respAtt < 0 || len(msg.Mutations) == 0) {
		// Heartbeats, events and error responses carry no attachments; a
		// response without them (result type 0-2) gets them only if the
		// client can read result types 3-5: not when this connection's
		// requests said otherwise. Mutations do not apply: counted, dropped.
		// Removals have nothing to remove there.
		if len(msg.Mutations) > 0 {
			ignoredMutations.Add(1)
		}
		return f, nil
	}
	return c.mergeAttachments(msg)
}

// LocalReply implements codecs.Codec: a response with the request's id, a
// status Java and dubbo-go clients turn into an RpcException, and a hessian2
// string body (the error message both expect for a status other than 20).
func (c *codec) LocalReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	var text strings.Builder
	text.WriteString("breeze proxy: ")
	text.WriteString(kind.Text())
	iface, _ := req.Metadata.Get(keyInterface)
	method, _ := req.Metadata.Get(keyMethod)
	if iface != "" || method != "" {
		fmt.Fprintf(&text, " for %s.%s", iface, method)
	}
	if detail != "" {
		text.WriteString(": ")
		text.WriteString(detail)
	}
	return responseFrame(req.ID, kindStatus(kind), text.String())
}

// kindStatus maps an ErrorKind to a Dubbo status. ErrNoHealthyUpstream is a
// SERVER_ERROR (80), as Envoy's dubbo_proxy answers it, rather than
// SERVICE_NOT_FOUND (60): the service is known, its providers are down.
func kindStatus(kind codecs.ErrorKind) byte {
	switch kind {
	case codecs.ErrNoRoute:
		return statusServiceNotFound
	case codecs.ErrTimeout:
		return statusServerTimeout
	case codecs.ErrOverloaded:
		return statusThreadPoolExhaust
	case codecs.ErrBadRequest:
		return statusBadRequest
	}
	return statusServerError
}

// ReplyCode implements codecs.ReplyCoder: the status LocalReply answers
// kind with.
func (c *codec) ReplyCode(kind codecs.ErrorKind) uint32 { return uint32(kindStatus(kind)) }

// IsGatewayError implements codecs.GatewayErrors: a provider timing out
// (31) or out of threads (100), which is also what Breeze and Envoy's
// dubbo_proxy answer for an upstream timeout and an overload.
func (c *codec) IsGatewayError(code uint32) bool {
	return code == statusServerTimeout || code == statusThreadPoolExhaust
}

// RequestKeys implements codecs.Describer: a request's service is its
// service path (the interface name), its method the method it calls (for a
// generic call, the method named by its first argument).
func (c *codec) RequestKeys() (service, method string) { return keyInterface, keyMethod }

// HeartbeatReply implements codecs.Codec: an event response with the
// heartbeat's id and null data, as Java's HeartbeatHandler sends.
func (c *codec) HeartbeatReply(hb *codecs.Message) []byte {
	return eventFrame(flagEvent|hessian2ID, statusOK, hb.ID)
}

// HeartbeatRequest returns a two-way heartbeat event with the given id, for
// the proxy to probe an upstream connection; the peer answers with a frame
// that decodes as codecs.HeartbeatReply.
func HeartbeatRequest(id uint64) []byte {
	return eventFrame(flagRequest|flagTwoWay|flagEvent|hessian2ID, 0, id)
}

// Heartbeat implements codecs.Pinger.
func (c *codec) Heartbeat(id uint64) []byte { return HeartbeatRequest(id) }

func eventFrame(flag, status byte, id uint64) []byte {
	f := []byte{magicHigh, magicLow, flag, status, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'N'}
	binary.BigEndian.PutUint64(f[4:], id)
	return f
}
