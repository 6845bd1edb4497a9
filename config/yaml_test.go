package config

import (
	"errors"
	"testing"
)

func TestYAMLToJSON(t *testing.T) {
	js, err := YAMLToJSON([]byte("a: [1, 2]\nb: {c: x}\n"))
	if err != nil || string(js) != `{"a":[1,2],"b":{"c":"x"}}` {
		t.Fatalf("got %s, %v", js, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"a: 1\n  b: 2\n", "line 2, column 4: YAML syntax error: mapping values are not allowed in this context"},
		{"a:\n  - x\n bad: y\n", "line 3, column 2: YAML syntax error: did not find expected key (while parsing a block mapping that starts at line 1, column 1)"},
		{"\tfoo: 1\n", "line 1, column 1: YAML syntax error: found character that cannot start any token"},
		{"a: 1\nb: [", "line 2, column 5: YAML syntax error: did not find expected node content"}, // at the end, without a newline
		{"a: 1\nb: [\n", "line 3, column 1: YAML syntax error: did not find expected node content"},
		{`{"a": 1, "b": [}`, "line 1, column 16: YAML syntax error: did not find expected node content"},
	} {
		_, err := YAMLToJSON([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) || err.Error() != tc.want {
			t.Errorf("%q:\ngot  %v\nwant %s", tc.in, err, tc.want)
		}
	}
	// A document that starts further down its file.
	_, err = YAMLToJSON([]byte("a:\n  - x\n bad: y\n"))
	var se *SyntaxError
	errors.As(err, &se)
	se.Shift(10)
	if want := "line 13, column 2: YAML syntax error: did not find expected key (while parsing a block mapping that starts at line 11, column 1)"; se.Error() != want {
		t.Errorf("shifted: got %v, want %s", se, want)
	}
}
