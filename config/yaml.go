package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	yamlv4 "go.yaml.in/yaml/v4"
	"sigs.k8s.io/yaml"
)

// SyntaxError is YAML that does not parse, at the line and column where
// the parser gave up (both 1-based).
type SyntaxError struct {
	Line, Column int
	// Msg is the parser's own words ("did not find expected key").
	Msg string
	// Context, when set, is the construct the parser was in and where it
	// starts: "while parsing a block mapping" at ContextLine:ContextColumn.
	// A mistake in indentation is often found only lines after the
	// construct it breaks; the start points back to it.
	Context                    string
	ContextLine, ContextColumn int
}

func (e *SyntaxError) Error() string {
	s := fmt.Sprintf("line %d, column %d: YAML syntax error: %s", e.Line, e.Column, e.Msg)
	if e.Line == 0 {
		s = "YAML syntax error: " + e.Msg
	}
	if e.Context != "" && e.ContextLine > 0 && (e.ContextLine != e.Line || e.ContextColumn != e.Column) {
		s += fmt.Sprintf(" (%s that starts at line %d, column %d)", e.Context, e.ContextLine, e.ContextColumn)
	}
	return s
}

// Shift moves the error's lines down by n: for a document that starts n
// lines into its file.
func (e *SyntaxError) Shift(n int) {
	if e.Line > 0 {
		e.Line += n
	}
	if e.ContextLine > 0 {
		e.ContextLine += n
	}
}

// YAMLToJSON converts YAML (or JSON) to JSON as sigs.k8s.io/yaml does, the
// reader of every Breeze file. A document that does not parse is a
// *SyntaxError with the line and column of the mistake: sigs.k8s.io/yaml's
// own errors name only a line ("yaml: line 12: did not find expected key"),
// so the input is parsed again with go.yaml.in/yaml/v4, whose errors carry
// the column. The first parser still decides what is valid: should the
// second accept what the first refused, its line-only message is kept.
func YAMLToJSON(data []byte) ([]byte, error) {
	js, err := yaml.YAMLToJSON(data)
	if err == nil {
		return js, nil
	}
	if se := locateYAMLError(data); se != nil {
		return nil, se
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	return nil, &SyntaxError{Msg: msg}
}

// locateYAMLError returns where go.yaml.in/yaml/v4 finds data's first
// syntax error, nil if it finds none.
func locateYAMLError(data []byte) *SyntaxError {
	d := yamlv4.NewDecoder(bytes.NewReader(data))
	for {
		var n yamlv4.Node
		err := d.Decode(&n)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		var le *yamlv4.LoadError
		if !errors.As(err, &le) || le.Mark.Line == 0 {
			return nil
		}
		se := &SyntaxError{
			Line: le.Mark.Line, Column: le.Mark.Column, Msg: le.Message,
			Context: le.ContextMsg, ContextLine: le.ContextMark.Line, ContextColumn: le.ContextMark.Column,
		}
		// At the end of input without a final newline the parser counts
		// one line more than there is: point after the last character.
		lines, end := bytes.Count(data, []byte("\n"))+1, len(data)-bytes.LastIndexByte(data, '\n')
		if se.Line > lines {
			se.Line, se.Column = lines, end
		}
		if se.ContextLine > lines {
			se.ContextLine, se.ContextColumn = lines, end
		}
		return se
	}
}
