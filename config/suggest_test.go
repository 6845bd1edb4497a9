package config

import "testing"

func TestNearest(t *testing.T) {
	fields := []string{"lb_policy", "endpoints", "connect_timeout", "name", "type"}
	for _, tc := range []struct{ in, want string }{
		{"lb_polcy", "lb_policy"},  // a letter missing
		{"lbpolicy", "lb_policy"},  // '_' does not count
		{"LB_POLICY", "lb_policy"}, // nor case
		{"endpionts", "endpoints"}, // letters swapped
		{"conect_timout", "connect_timeout"},
		{"nmae", "name"},
		{"typ", "type"},
		{"balancer", ""}, // nothing near
		{"xy", ""},
		{"lb_policy", ""}, // the name itself
	} {
		if got := Nearest(tc.in, fields); got != tc.want {
			t.Errorf("Nearest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Two as near: no guess.
	if got := Nearest("v3", []string{"v1", "v2"}); got != "" {
		t.Errorf("Nearest(v3) = %q, want none", got)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"kitten", "sitting", 3}, {"ab", "ba", 1}, {"abc", "acb", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
