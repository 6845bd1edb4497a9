package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// Dubbo 2 frame layout: see /work/shared/protocols.md and Apache Dubbo's
// ExchangeCodec. Only what the tests need to build and check frames by hand.
const (
	HeaderLen = 16

	FlagRequest = 0x80
	FlagTwoWay  = 0x40
	FlagEvent   = 0x20
	// SerialHessian2 is the hessian2 serialization id (low 5 bits of the flags).
	SerialHessian2 = 2

	StatusOK = 20
)

// Header is a decoded Dubbo frame header.
type Header struct {
	Flags   byte
	Status  byte
	ID      uint64
	BodyLen uint32
}

func (h Header) IsRequest() bool { return h.Flags&FlagRequest != 0 }
func (h Header) IsTwoWay() bool  { return h.Flags&FlagTwoWay != 0 }
func (h Header) IsEvent() bool   { return h.Flags&FlagEvent != 0 }

// IsHeartbeat reports a heartbeat request (an event request).
func (h Header) IsHeartbeat() bool { return h.IsEvent() && h.IsRequest() }

// IsHeartbeatReply reports a heartbeat reply (an event response).
func (h Header) IsHeartbeatReply() bool { return h.IsEvent() && !h.IsRequest() }

func (h Header) String() string {
	kind := "response"
	switch {
	case h.IsHeartbeat():
		kind = "heartbeat"
	case h.IsHeartbeatReply():
		kind = "heartbeat-reply"
	case h.IsRequest() && h.IsTwoWay():
		kind = "request"
	case h.IsRequest():
		kind = "oneway"
	}
	return fmt.Sprintf("%s id=%d flags=%#02x status=%d body=%d", kind, h.ID, h.Flags, h.Status, h.BodyLen)
}

// ErrBadMagic: the bytes are not a Dubbo frame.
var ErrBadMagic = errors.New("not a dubbo frame: bad magic")

// ParseHeader decodes the 16-byte header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, io.ErrUnexpectedEOF
	}
	if b[0] != 0xda || b[1] != 0xbb {
		return Header{}, ErrBadMagic
	}
	return Header{
		Flags:   b[2],
		Status:  b[3],
		ID:      binary.BigEndian.Uint64(b[4:12]),
		BodyLen: binary.BigEndian.Uint32(b[12:16]),
	}, nil
}

// maxTestFrame bounds what ReadFrame accepts (Dubbo's default limit).
const maxTestFrame = 8 << 20

// ReadFrame reads one whole frame (header and body) from r.
func ReadFrame(r io.Reader) (Header, []byte, error) {
	hdr := make([]byte, HeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return Header{}, nil, err
	}
	h, err := ParseHeader(hdr)
	if err != nil {
		return Header{}, nil, err
	}
	if h.BodyLen > maxTestFrame {
		return h, nil, fmt.Errorf("dubbo frame body of %d bytes is over %d", h.BodyLen, maxTestFrame)
	}
	raw := make([]byte, HeaderLen+int(h.BodyLen))
	copy(raw, hdr)
	if _, err := io.ReadFull(r, raw[HeaderLen:]); err != nil {
		return h, nil, err
	}
	return h, raw, nil
}

func frame(flags, status byte, id uint64, body []byte) []byte {
	b := make([]byte, HeaderLen+len(body))
	b[0], b[1], b[2], b[3] = 0xda, 0xbb, flags, status
	binary.BigEndian.PutUint64(b[4:12], id)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(body)))
	copy(b[HeaderLen:], body)
	return b
}

// HeartbeatRequest is a two-way heartbeat event with a null body, as Dubbo
// Java and dubbo-go send it.
func HeartbeatRequest(id uint64) []byte {
	return frame(FlagRequest|FlagTwoWay|FlagEvent|SerialHessian2, 0, id, []byte{'N'})
}

// Invocation is a Dubbo call to encode by hand.
type Invocation struct {
	Service string // interface, e.g. org.breeze.Greeter
	Version string
	Method  string
	// ParamTypes is the JVM descriptor of the arguments, e.g.
	// "Ljava/lang/String;"; it must agree with Args.
	ParamTypes  string
	Args        []interface{}
	Attachments map[string]string
}

// EncodeRequest encodes a two-way hessian2 request with the given id, laid
// out as Dubbo's DubboCodec.encodeRequestData does.
func EncodeRequest(id uint64, inv Invocation) ([]byte, error) {
	e := hessian.NewEncoder()
	att := map[interface{}]interface{}{"path": inv.Service, "interface": inv.Service}
	if inv.Version != "" {
		att["version"] = inv.Version
	}
	for k, v := range inv.Attachments {
		att[k] = v
	}
	for _, v := range []interface{}{"2.0.2", inv.Service, inv.Version, inv.Method, inv.ParamTypes} {
		if err := e.Encode(v); err != nil {
			return nil, err
		}
	}
	for _, a := range inv.Args {
		if err := e.Encode(a); err != nil {
			return nil, err
		}
	}
	if err := e.Encode(att); err != nil {
		return nil, err
	}
	return frame(FlagRequest|FlagTwoWay|SerialHessian2, 0, id, e.Buffer()), nil
}

// Response is a decoded Dubbo response.
type Response struct {
	Header Header
	// Value is the returned value (status 20, value kinds).
	Value interface{}
	// Exception is the thrown exception (status 20, exception kinds), or the
	// error text of a non-20 status.
	Exception   interface{}
	Attachments map[interface{}]interface{}
}

// Failed reports a response that is not a normal value.
func (r Response) Failed() bool { return r.Header.Status != StatusOK || r.Exception != nil }

// DecodeResponse decodes a whole response frame (not a heartbeat reply).
func DecodeResponse(raw []byte) (Response, error) {
	h, err := ParseHeader(raw)
	if err != nil {
		return Response{}, err
	}
	if h.IsRequest() {
		return Response{}, fmt.Errorf("frame %s is a request", h)
	}
	if len(raw) != HeaderLen+int(h.BodyLen) {
		return Response{}, fmt.Errorf("frame %s has %d body bytes", h, len(raw)-HeaderLen)
	}
	r := Response{Header: h}
	d := hessian.NewDecoder(raw[HeaderLen:])
	if h.Status != StatusOK {
		// The body of an error status is the error message, a string.
		r.Exception, err = d.Decode()
		if err != nil {
			return r, fmt.Errorf("decode error text of %s: %w", h, err)
		}
		return r, nil
	}
	if h.IsEvent() {
		return r, nil
	}
	kind, err := d.Decode()
	if err != nil {
		return r, fmt.Errorf("decode result kind of %s: %w", h, err)
	}
	k, ok := kind.(int32)
	if !ok {
		return r, fmt.Errorf("result kind of %s is %T %v, want int", h, kind, kind)
	}
	switch k {
	case 0, 3: // exception
		r.Exception, err = d.Decode()
	case 1, 4: // value
		r.Value, err = d.Decode()
	case 2, 5: // null value
	default:
		return r, fmt.Errorf("result kind %d of %s is unknown", k, h)
	}
	if err != nil {
		return r, fmt.Errorf("decode result of %s: %w", h, err)
	}
	if k >= 3 {
		a, err := d.Decode()
		if err != nil {
			return r, fmt.Errorf("decode attachments of %s: %w", h, err)
		}
		r.Attachments, _ = a.(map[interface{}]interface{})
	}
	return r, nil
}

// ErrorResponse builds a response with a non-20 status whose body is the
// error text, the way Dubbo Java reports protocol-level failures.
func ErrorResponse(id uint64, status byte, text string) []byte {
	e := hessian.NewEncoder()
	_ = e.Encode(text)
	return frame(SerialHessian2, status, id, e.Buffer())
}

// ValueResponse builds a status-20 response carrying v (without attachments).
func ValueResponse(id uint64, v interface{}) []byte {
	e := hessian.NewEncoder()
	_ = e.Encode(int32(1))
	_ = e.Encode(v)
	return frame(SerialHessian2, StatusOK, id, e.Buffer())
}

// DecodeRequest decodes the header fields of a hessian2 request body: what a
// fake provider needs to answer it.
func DecodeRequest(raw []byte) (Header, Invocation, error) {
	h, err := ParseHeader(raw)
	if err != nil {
		return h, Invocation{}, err
	}
	if !h.IsRequest() || h.IsEvent() {
		return h, Invocation{}, fmt.Errorf("frame %s is not a call", h)
	}
	d := hessian.NewDecoder(raw[HeaderLen:])
	var fields [5]string
	for i := range fields {
		v, err := d.Decode()
		if err != nil {
			return h, Invocation{}, fmt.Errorf("decode request field %d of %s: %w", i, h, err)
		}
		s, _ := v.(string)
		fields[i] = s
	}
	inv := Invocation{Service: fields[1], Version: fields[2], Method: fields[3], ParamTypes: fields[4]}
	for range countParams(inv.ParamTypes) {
		v, err := d.Decode()
		if err != nil {
			return h, inv, fmt.Errorf("decode argument of %s: %w", h, err)
		}
		inv.Args = append(inv.Args, v)
	}
	if a, err := d.Decode(); err == nil {
		inv.Attachments = map[string]string{}
		if m, ok := a.(map[interface{}]interface{}); ok {
			for k, v := range m {
				inv.Attachments[fmt.Sprint(k)] = fmt.Sprint(v)
			}
		}
	}
	return h, inv, nil
}

// countParams counts the parameters in a JVM descriptor list such as
// "Ljava/lang/String;I[J".
func countParams(desc string) int {
	n := 0
	for i := 0; i < len(desc); i++ {
		for i < len(desc) && desc[i] == '[' {
			i++
		}
		if i >= len(desc) {
			break
		}
		if desc[i] == 'L' {
			j := bytes.IndexByte([]byte(desc[i:]), ';')
			if j < 0 {
				break
			}
			i += j
		}
		n++
	}
	return n
}
