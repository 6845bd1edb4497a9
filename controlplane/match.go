package controlplane

import (
	"fmt"
	"maps"
	"regexp"
	"slices"

	metaprotocolv1alpha1 "github.com/aeraki-mesh/api/metaprotocol/v1alpha1"

	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// attributeMatchers translates a MetaRouteMatch (a route's match, a rate
// limit condition's) into Breeze metadata matchers, keys in sorted order;
// field is where the match sits (spec.routes[0].match). It reports false
// after reporting an error.
func (t *translator) attributeMatchers(o *Object, field string, match *metaprotocolv1alpha1.MetaRouteMatch) ([]*breezev1.MetadataMatcher, bool) {
	var out []*breezev1.MetadataMatcher
	ok := true
	for _, k := range slices.Sorted(maps.Keys(match.GetAttributes())) {
		m, f := match.GetAttributes()[k], fmt.Sprintf("%s.attributes[%q]", field, k)
		mm := &breezev1.MetadataMatcher{Key: k}
		switch s := m.GetMatchType().(type) {
		case *metaprotocolv1alpha1.StringMatch_Exact:
			mm.Match = &breezev1.MetadataMatcher_Exact{Exact: s.Exact}
		case *metaprotocolv1alpha1.StringMatch_Prefix:
			mm.Match = &breezev1.MetadataMatcher_Prefix{Prefix: s.Prefix}
		case *metaprotocolv1alpha1.StringMatch_Regex:
			if s.Regex == "*" {
				// Not RE2: Aeraki (as Istio for headers) reads it as
				// "present, any value".
				mm.Match = &breezev1.MetadataMatcher_Present{Present: true}
				break
			}
			if _, err := regexp.Compile(s.Regex); err != nil {
				t.problem(o, f+".regex", false, "%q: %v", s.Regex, err)
				ok = false
			}
			mm.Match = &breezev1.MetadataMatcher_Regex{Regex: s.Regex}
		default:
			// No operator ({}): "presence of the attribute is
			// checked" (MetaRouteMatch.attributes in Aeraki's API).
			mm.Match = &breezev1.MetadataMatcher_Present{Present: true}
		}
		out = append(out, mm)
	}
	return out, ok
}
