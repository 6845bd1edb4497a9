package thrift

import (
	"encoding/binary"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
)

// A TApplicationException's type is the response's Code; every other
// message's Code is 0. The peers' app_exception frames are real Apache
// Thrift and Kitex servers failing Greet with an undeclared error:
// INTERNAL_ERROR (6).
func TestExceptionCode(t *testing.T) {
	for _, f := range flavorsUnderTest {
		c := newCodec(t, codecs.Options{Params: f.onewayParam()})
		// One Message for all, never Reset: Decode must clear the Code.
		var m codecs.Message
		for _, tc := range []struct {
			kind string
			code uint32
		}{{"app_exception", excInternalError}, {"response", 0}, {"app_exception", excInternalError}, {"exception", 0}, {"void_response", 0}, {"request", 0}} {
			b := f.frame(t, tc.kind)
			if n, err := c.Decode(b, &m); n != len(b) || err != nil {
				t.Fatalf("%v %s: Decode = %d, %v", f, tc.kind, n, err)
			}
			if m.Code != tc.code {
				t.Errorf("%v %s: Code %d, want %d", f, tc.kind, m.Code, tc.code)
			}
		}
	}
}

// The type is found wherever it sits in the struct, after fields of any
// kind, in field headers of either compact form; a struct without one, or
// with a field 2 of another type, is Code 0 and still relayed.
func TestExceptionCodeAnywhere(t *testing.T) {
	type field struct {
		id  int16
		typ string // "string", "i32", "list", "struct"
		i32 int32
	}
	msg := field{1, "string", 0}
	for _, tc := range []struct {
		name   string
		fields []field
		want   uint32
	}{
		{"message then type", []field{msg, {2, "i32", 3}}, 3},
		{"type first", []field{{2, "i32", 8}, msg}, 8},
		{"after unknown fields", []field{{9, "list", 0}, {7, "struct", 0}, msg, {2, "i32", 10}}, 10},
		{"a long-form field id", []field{{300, "string", 0}, {2, "i32", 5}}, 5},
		{"negative", []field{{2, "i32", -1}}, 0xffffffff},
		{"no type", []field{msg}, 0},
		{"field 2 not an i32", []field{{2, "string", 0}}, 0},
		{"empty", nil, 0},
	} {
		for _, proto := range []string{"binary", "compact"} {
			var body []byte
			last := int16(0)
			for _, f := range tc.fields {
				if proto == "binary" {
					body = append(body, map[string]byte{"string": bString, "i32": bI32, "list": bList, "struct": bStruct}[f.typ])
					body = binary.BigEndian.AppendUint16(body, uint16(f.id))
					switch f.typ {
					case "string":
						body = append(body, 0, 0, 0, 2, 'h', 'i')
					case "i32":
						body = binary.BigEndian.AppendUint32(body, uint32(f.i32))
					case "list": // two i32
						body = append(body, bI32, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2)
					case "struct": // {2: i32 7}, a field 2 that is not the exception's
						body = append(body, bI32, 0, 2, 0, 0, 0, 7, bStop)
					}
					continue
				}
				ct := map[string]byte{"string": cBinary, "i32": cI32, "list": cList, "struct": cStruct}[f.typ]
				if d := f.id - last; d > 0 && d < 16 {
					body = append(body, byte(d)<<4|ct)
				} else {
					body = append(body, ct)
					body = appendVarint(body, uint32(f.id<<1^f.id>>15))
				}
				last = f.id
				switch f.typ {
				case "string":
					body = append(body, 2, 'h', 'i')
				case "i32":
					body = appendVarint(body, uint32(f.i32<<1^f.i32>>31))
				case "list":
					body = append(body, 2<<4|cI32, 2, 4)
				case "struct":
					body = append(body, 2<<4|cI32, 14, cStop)
				}
			}
			body = append(body, bStop) // cStop too
			var frame []byte
			if proto == "binary" {
				frame = binary.BigEndian.AppendUint32(nil, binaryVersion1|msgException)
				frame = binary.BigEndian.AppendUint32(frame, 5)
				frame = append(frame, "Greet"...)
				frame = binary.BigEndian.AppendUint32(frame, 1)
			} else {
				frame = append(frame, compactID, msgException<<compactTypeShift|compactVersion, 1, 5)
				frame = append(frame, "Greet"...)
			}
			frame = append(frame, body...)
			m := decode(t, newCodec(t, codecs.Options{}), frame)
			if m.Type != codecs.Response || m.Status != codecs.StatusError || m.Code != tc.want {
				t.Errorf("%s, %s: %v %v Code %d, want an error response with Code %d", tc.name, proto, m.Type, m.Status, m.Code, tc.want)
			}
		}
	}
}
