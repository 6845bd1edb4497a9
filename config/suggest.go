package config

import (
	"strings"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Nearest returns the candidate closest to s, for a "did you mean" after a
// misspelt name: case, '_' and '-' do not count (lbPolicy is lb_policy),
// and a candidate counts only within a few edits of s (more for longer
// names), so that an unrelated name is never suggested. It returns ""
// when none is close, or when several are equally close (v3 is as near to
// v1 as to v2: a guess would mislead).
func Nearest(s string, candidates []string) string {
	ns := foldName(s)
	limit := 1
	switch {
	case len(ns) >= 12:
		limit = 3
	case len(ns) >= 6:
		limit = 2
	}
	best, bestD, tie := "", limit+1, false
	for _, c := range candidates {
		nc := foldName(c)
		if nc == ns && c == s {
			continue // the name itself is no suggestion
		}
		switch d := editDistance(ns, nc); {
		case d < bestD:
			best, bestD, tie = c, d, false
		case d == bestD && c != best:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return best
}

// foldName is a name without case, '_' and '-'.
func foldName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || r == '-' {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// editDistance is the optimal string alignment distance of a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// letters each count one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// nearestField suggests the field of md nearest to k, a key that names
// none, in the style k is written in: a camelCase key gets the JSON name
// (as Istio's CRDs want), any other the proto (snake_case) name.
func nearestField(md protoreflect.MessageDescriptor, k string) string {
	camel := strings.IndexFunc(k, unicode.IsUpper) >= 0
	var names []string
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if camel {
			names = append(names, fd.JSONName())
		} else {
			names = append(names, string(fd.Name()))
		}
	}
	return Nearest(k, names)
}

// enumValues lists the names an enum field takes, without the zero
// placeholders that mean "unset" (INVALID, ..._UNSPECIFIED).
func enumValues(ed protoreflect.EnumDescriptor) []string {
	var names []string
	vals := ed.Values()
	for i := range vals.Len() {
		n := string(vals.Get(i).Name())
		if vals.Get(i).Number() == 0 && (n == "INVALID" || strings.HasSuffix(n, "UNSPECIFIED")) {
			continue
		}
		names = append(names, n)
	}
	return names
}
