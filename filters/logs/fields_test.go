package logs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Every key of every log line under filters/ is one of Fields. Lines are
// the calls of Debug, Info, Warn, Error and With: on an slog.Logger the
// message then key/value pairs (an odd count of arguments); on a Logger
// of this package a reason and a message first (an even count). Pairs
// built apart, for a line that passes them with args..., are a []any
// literal or appended to a slice named args.
func TestFieldNames(t *testing.T) {
	known := map[string]bool{}
	for _, f := range Fields {
		if known[f.Key] {
			t.Errorf("Fields lists %q twice", f.Key)
		}
		known[f.Key] = true
	}
	fset := token.NewFileSet()
	lines := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var pairs []ast.Expr
			if lit, ok := n.(*ast.CompositeLit); ok {
				if at, ok := lit.Type.(*ast.ArrayType); ok && isIdent(at.Elt, "any") {
					pairs = lit.Elts
					lines++
				}
			}
			call, ok := n.(*ast.CallExpr)
			if !ok {
				check(t, fset, known, pairs)
				return true
			}
			if isIdent(call.Fun, "append") && len(call.Args) > 1 && isIdent(call.Args[0], "args") && !call.Ellipsis.IsValid() {
				check(t, fset, known, call.Args[1:])
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || call.Ellipsis.IsValid() {
				return true
			}
			switch name := sel.Sel.Name; {
			case name == "With":
				pairs = call.Args
			case slices.Contains([]string{"Debug", "Info", "Warn", "Error"}, name) && len(call.Args) > 0:
				if !isString(call.Args[0]) {
					return true // not a log line (a test's t.Error, say)
				}
				skip := 1
				if len(call.Args)%2 == 0 {
					skip = 2
				}
				pairs = call.Args[skip:]
			default:
				return true
			}
			lines++
			check(t, fset, known, pairs)
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if lines < 40 {
		t.Fatalf("found %d log lines under filters/: the walk missed them", lines)
	}
}

// check: the keys of pairs (key, value, key, value...) are known.
func check(t *testing.T, fset *token.FileSet, known map[string]bool, pairs []ast.Expr) {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		at := fset.Position(pairs[i].Pos())
		lit, ok := pairs[i].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Errorf("%s: a log key that is not a string literal: keys are from Fields", at)
			continue
		}
		if key, _ := strconv.Unquote(lit.Value); !known[key] {
			t.Errorf("%s: log key %q is not in Fields (filters/logs/fields.go): use the key listed for the same thing, or add it there", at, key)
		}
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// isString: a string literal, or an expression starting with one (a
// message built with +).
func isString(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.STRING
	case *ast.BinaryExpr:
		return isString(e.X) || isString(e.Y)
	}
	return false
}
