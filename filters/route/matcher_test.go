package route

import (
	"strings"
	"testing"

	"github.com/breeze-mesh/breeze/codecs"
	breezev1 "github.com/breeze-mesh/breeze/protos/breeze/v1"
)

// A Matcher holds exactly when a route with the same match.metadata would
// match, and its errors name the matcher's index.
func TestMatcher(t *testing.T) {
	m, err := CompileMatcher([]*breezev1.MetadataMatcher{
		{Key: "method", Match: &breezev1.MetadataMatcher_Regex{Regex: "say.*"}},
		{Key: "test-fault", Match: &breezev1.MetadataMatcher_Exact{Exact: "yes"}},
		{Key: "debug", Match: &breezev1.MetadataMatcher_Present{Present: true}, Invert: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		md   codecs.Metadata
		want bool
	}{
		{codecs.Metadata{{Key: "method", Value: "sayHello"}, {Key: "test-fault", Value: "yes"}}, true},
		{codecs.Metadata{{Key: "method", Value: "xsayHello"}, {Key: "test-fault", Value: "yes"}}, false},
		{codecs.Metadata{{Key: "method", Value: "sayHello"}, {Key: "test-fault", Value: "no"}}, false},
		{codecs.Metadata{{Key: "method", Value: "sayHello"}, {Key: "test-fault", Value: "yes"}, {Key: "debug"}}, false},
	} {
		if got := m.Matches(c.md); got != c.want {
			t.Errorf("%v: matches %v, want %v", c.md, got, c.want)
		}
	}
	if !Matcher(nil).Matches(nil) {
		t.Error("an empty matcher does not match everything")
	}
	for _, c := range []struct {
		m    *breezev1.MetadataMatcher
		want string
	}{
		{&breezev1.MetadataMatcher{Key: "a", Match: &breezev1.MetadataMatcher_Regex{Regex: "("}}, `[1].regex: "(": error parsing regexp: missing closing )`},
		{&breezev1.MetadataMatcher{Match: &breezev1.MetadataMatcher_Exact{Exact: "x"}}, `[1].key: "": required`},
		{&breezev1.MetadataMatcher{Key: "a"}, `[1]: key "a": needs one of exact, prefix, regex, present`},
	} {
		_, err := CompileMatcher([]*breezev1.MetadataMatcher{{Key: "ok", Match: &breezev1.MetadataMatcher_Present{Present: true}}, c.m})
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("error %v, want it to start with %s", err, c.want)
		}
	}
}
