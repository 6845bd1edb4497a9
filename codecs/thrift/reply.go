package thrift

import (
	"encoding/binary"
	"strings"

	"github.com/breeze-mesh/breeze/codecs"
)

// TApplicationException types (Apache Thrift TApplicationException).
const (
	excUnknownMethod = 1
	excInternalError = 6
	excProtocolError = 7
)

// LocalReply implements codecs.Codec: a TApplicationException (message
// type EXCEPTION) named after the request's method, with its seqid, in the
// transport and protocol the client speaks, which Apache Thrift and Kitex
// clients raise as an application exception.
func (c *codec) LocalReply(req *codecs.Message, kind codecs.ErrorKind, detail string) []byte {
	method, _ := req.Metadata.Get(keyMethod)
	service, _ := req.Metadata.Get(keyService)
	var text strings.Builder
	text.WriteString("breeze proxy: ")
	text.WriteString(kind.Text())
	if method != "" {
		text.WriteString(" for ")
		if service != "" {
			text.WriteString(service)
			text.WriteByte(':')
		}
		text.WriteString(method)
	}
	if detail != "" {
		text.WriteString(": ")
		text.WriteString(detail)
	}
	tr, p := c.tr, c.proto
	strict, inner := c.strict || c.tr == tAuto, c.innerFramed
	if f := req.Private[privFlags]; f != 0 {
		// The request's own flavor, when the proxy kept it.
		tr, p, _, _ = unpackFlags(f)
		strict, inner = f&flagStrict != 0, f&flagInnerFramed != 0
	}
	if tr == tAuto {
		tr, p = c.pinTr, c.pinProto
		if tr == tAuto {
			tr = tFramed
		}
		if p == pAuto {
			p = pBinary
		}
	}
	return exceptionFrame(tr, p, strict, inner, uint32(req.ID), method, text.String(), excType(kind))
}

// ReplyCode implements codecs.ReplyCoder: the TApplicationException type
// LocalReply answers kind with.
func (c *codec) ReplyCode(kind codecs.ErrorKind) uint32 { return uint32(excType(kind)) }

// CarriesKeys implements codecs.KeyCarrier: only THeader and TTHeader
// frames have headers to write mutations into.
func (c *codec) CarriesKeys(m *codecs.Message) bool {
	tr, _, _, _ := unpackFlags(m.Private[privFlags])
	return tr == tHeader || tr == tTTHeader
}

// RequestKeys implements codecs.Describer: the method is the message name
// without its multiplexing prefix, the service that prefix (present only for
// multiplexed calls).
func (c *codec) RequestKeys() (service, method string) { return keyService, keyMethod }

func excType(kind codecs.ErrorKind) int32 {
	switch kind {
	case codecs.ErrNoRoute:
		return excUnknownMethod
	case codecs.ErrBadRequest:
		return excProtocolError
	}
	return excInternalError
}

// exceptionFrame writes a whole frame holding a TApplicationException
// {1: string message, 2: i32 type}.
func exceptionFrame(tr transport, p protocol, strict, innerFramed bool, seq uint32, method, text string, typ int32) []byte {
	b := make([]byte, 0, 64+len(method)+len(text))
	start := 0
	switch tr {
	case tFramed:
		b = append(b, 0, 0, 0, 0)
		start = 4
	case tHeader, tTTHeader:
		magic := uint16(theaderMagic)
		if tr == tTTHeader {
			magic = ttheaderMagic
		}
		b = append(b, 0, 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, magic)
		b = append(b, 0, 0) // flags
		b = binary.BigEndian.AppendUint32(b, seq)
		b = append(b, 0, 1) // one word of header
		id := byte(protoIDBinary)
		if p == pCompact {
			id = protoIDCompact
		}
		// protocol id, no transforms, no info, padding: the same two bytes
		// read as THeader varints and as TTHeader bytes.
		b = append(b, id, 0, 0, 0)
		start = 4
		if tr == tTTHeader && innerFramed {
			b = append(b, 0, 0, 0, 0)
		}
	}
	if p == pCompact {
		b = append(b, compactID, msgException<<compactTypeShift|compactVersion)
		b = appendVarint(b, seq)
		b = appendVarint(b, uint32(len(method)))
		b = append(b, method...)
		b = append(b, 1<<4|cBinary)
		b = appendVarint(b, uint32(len(text)))
		b = append(b, text...)
		b = append(b, 1<<4|cI32)
		b = appendVarint(b, uint32(typ<<1^typ>>31)) // zigzag
		b = append(b, cStop)
	} else {
		if strict {
			b = binary.BigEndian.AppendUint32(b, binaryVersion1|msgException)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(method)))
		b = append(b, method...)
		if !strict {
			b = append(b, msgException)
		}
		b = binary.BigEndian.AppendUint32(b, seq)
		b = append(b, bString, 0, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(text)))
		b = append(b, text...)
		b = append(b, bI32, 0, 2)
		b = binary.BigEndian.AppendUint32(b, uint32(typ))
		b = append(b, bStop)
	}
	if start == 4 {
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	}
	if tr == tTTHeader && innerFramed {
		binary.BigEndian.PutUint32(b[hdrMetaSize+4:], uint32(len(b)-hdrMetaSize-8))
	}
	return b
}

// HeartbeatReply implements codecs.Codec. Thrift has no heartbeat, so
// Decode never yields one; it returns nil.
func (c *codec) HeartbeatReply(hb *codecs.Message) []byte { return nil }
