package route

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/breeze-mesh/breeze/codecs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// Matcher is a compiled list of metadata conditions, all of which must
// hold: a route's match.metadata. Filters that select requests (a rate
// limit's conditions, a fault's match) use it so that their matches read
// exactly as routes' do.
type Matcher []condition

// CompileMatcher compiles metadata matchers. An error names the matcher
// by its index, e.g. `[1].regex: "(": error parsing regexp: ...`, for the caller
// to prefix with where the list sits.
func CompileMatcher(ms []*breezev1.MetadataMatcher) (Matcher, error) {
	var out Matcher
	for i, m := range ms {
		if m.GetKey() == "" {
			return nil, fmt.Errorf(`[%d].key: "": required`, i)
		}
		c := condition{key: m.GetKey(), invert: m.GetInvert()}
		switch v := m.GetMatch().(type) {
		case *breezev1.MetadataMatcher_Exact:
			c.kind, c.value = matchExact, v.Exact
		case *breezev1.MetadataMatcher_Prefix:
			c.kind, c.value = matchPrefix, v.Prefix
		case *breezev1.MetadataMatcher_Regex:
			// Compiled alone first, so that an error quotes the regex as written.
			if _, err := regexp.Compile(v.Regex); err != nil {
				return nil, fmt.Errorf("[%d].regex: %s: %w", i, strconv.Quote(v.Regex), err)
			}
			re := regexp.MustCompile("^(?:" + v.Regex + ")$")
			c.kind, c.re = matchRegex, re
		case *breezev1.MetadataMatcher_Present:
			c.kind, c.present = matchPresent, v.Present
		default:
			return nil, fmt.Errorf("[%d]: key %q: needs one of exact, prefix, regex, present", i, m.GetKey())
		}
		out = append(out, c)
	}
	return out, nil
}

// Matches reports whether every condition holds for md (true for none).
func (m Matcher) Matches(md codecs.Metadata) bool {
	for i := range m {
		if !m[i].holds(md) {
			return false
		}
	}
	return true
}
