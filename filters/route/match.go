package route

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/breeze-mesh/breeze/codecs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Conditions are compiled metadata matchers that must all hold: a route's
// match, and what filters that select requests the way routes do (rate
// limits) compile theirs into.
type Conditions []condition

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchRegex
	matchPresent
)

type condition struct {
	key     string
	kind    matchKind
	value   string
	re      *regexp.Regexp
	present bool
	invert  bool
}

// CompileConditions compiles matchers as a route's match.metadata. It
// re-checks what it relies on; errors name the matcher by its index
// ("[1].regex: ..."), full validation with field paths is config.Validate's.
func CompileConditions(ms []*breezev1.MetadataMatcher) (Conditions, error) {
	var cs Conditions
	for i, m := range ms {
		c := condition{key: m.GetKey(), invert: m.GetInvert()}
		switch v := m.GetMatch().(type) {
		case *breezev1.MetadataMatcher_Exact:
			c.kind, c.value = matchExact, v.Exact
		case *breezev1.MetadataMatcher_Prefix:
			c.kind, c.value = matchPrefix, v.Prefix
		case *breezev1.MetadataMatcher_Regex:
			re, err := regexp.Compile("^(?:" + v.Regex + ")$")
			if err != nil {
				return nil, fmt.Errorf("[%d].regex: %w", i, err)
			}
			c.kind, c.re = matchRegex, re
		case *breezev1.MetadataMatcher_Present:
			c.kind, c.present = matchPresent, v.Present
		default:
			return nil, fmt.Errorf("[%d]: no match kind (exact, prefix, regex or present)", i)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// Hold reports whether every condition holds for md; true for none.
func (cs Conditions) Hold(md codecs.Metadata) bool {
	for i := range cs {
		if !cs[i].holds(md) {
			return false
		}
	}
	return true
}

func (c *condition) holds(md codecs.Metadata) bool {
	v, ok := md.Get(c.key)
	var r bool
	switch c.kind {
	case matchPresent:
		r = ok == c.present
	case matchExact:
		r = ok && v == c.value
	case matchPrefix:
		r = ok && strings.HasPrefix(v, c.value)
	case matchRegex:
		r = ok && c.re.MatchString(v)
	}
	return r != c.invert
}
