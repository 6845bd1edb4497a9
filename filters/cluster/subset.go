package cluster

import (
	"maps"
	"slices"
	"strings"
)

// SubsetKey is the canonical name of a set of subset labels: name=value
// pairs sorted by name and joined by commas ("version=v2,zone=a"). A
// backslash escapes any ',', '=' or '\' in a name or value, so that
// distinct label sets never share a key (and a balancer).
func SubsetKey(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeEscaped(&b, k)
		b.WriteByte('=')
		writeEscaped(&b, labels[k])
	}
	return b.String()
}

func writeEscaped(b *strings.Builder, s string) {
	if !strings.ContainsAny(s, `,=\`) {
		b.WriteString(s)
		return
	}
	for i := range len(s) {
		switch s[i] {
		case ',', '=', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
}
