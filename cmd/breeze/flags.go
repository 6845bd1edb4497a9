package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Flag handling shared by every command. Go's flag package, not a CLI
// library: scripts and docs use single-dash long flags (-c, -dir,
// -log-level), which flag accepts as it accepts --flag, while pflag (and
// so cobra) reads -dir as -d -i -r. What flag lacks is added here: --help
// on standard output with exit status 0, one line and the synopsis on
// standard error for a mistake (exit status 2), flags after arguments.

// errHelp: the command's help was asked for and printed.
var errHelp = errors.New("help requested")

// usageError is a mistake in a command's flags or arguments.
type usageError struct {
	cmd      string // "run", "render"
	synopsis string
	err      error
}

func (e *usageError) Error() string { return e.err.Error() }

// cmdFlags are one command's flags and its help.
type cmdFlags struct {
	*flag.FlagSet
	cmd      string
	synopsis string // the usage line after "usage: "
	about    string // what the command does, for --help
}

func newFlags(cmd, synopsis, about string) *cmdFlags {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	// Parse's own messages are replaced by those of parse.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, cmd: cmd, synopsis: synopsis, about: about}
}

// parse parses flags wherever they are among the arguments (up to "--")
// and returns the arguments. -h, -help and --help print the help to
// standard output and return errHelp.
func (f *cmdFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.printHelp(os.Stdout)
				return nil, errHelp
			}
			return nil, &usageError{cmd: f.cmd, synopsis: f.synopsis, err: err}
		}
		rest := f.Args()
		// Parse stops at the first argument, or after "--": all that
		// follows "--" is arguments.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageErrorf reports a mistake in the command's arguments.
func (f *cmdFlags) usageErrorf(format string, args ...any) error {
	return &usageError{cmd: f.cmd, synopsis: f.synopsis, err: fmt.Errorf(format, args...)}
}

// noArgs refuses arguments to a command that takes none; hint says what
// the first one was probably meant to be.
func (f *cmdFlags) noArgs(args []string, hint func(arg string) string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unexpected argument %q", args[0])
	if hint != nil {
		msg += ": " + hint(args[0])
	}
	return f.usageErrorf("%s", msg)
}

func (f *cmdFlags) printHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s", f.synopsis, f.about)
	n := 0
	f.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nflags (-flag and --flag are the same):\n")
		f.SetOutput(w)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
}

// logFlags are -log-level and -log-format, on every long-running command.
type logFlags struct {
	level  levelFlag
	format formatFlag
}

func addLogFlags(f *cmdFlags) *logFlags {
	l := &logFlags{}
	f.Var(&l.level, "log-level", "log lines of this `LEVEL` and above: debug, info, warn or error (default info)")
	f.Var(&l.format, "log-format", "`FORMAT` of the log lines on standard error: text (key=value pairs) or json (one object a line) (default text)")
	return l
}

// logger writes to standard error as the flags say, and is the default
// logger of the process.
func (l *logFlags) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.Level(l.level)}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if l.format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	return log
}

// levelFlag is a slog.Level; the zero value is info.
type levelFlag slog.Level

func (l *levelFlag) String() string { return strings.ToLower(slog.Level(*l).String()) }

func (l *levelFlag) Set(s string) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	*l = levelFlag(lvl)
	return nil
}

// formatFlag is text or json; the zero value is text.
type formatFlag string

func (f *formatFlag) String() string {
	if *f == "" {
		return "text"
	}
	return string(*f)
}

func (f *formatFlag) Set(s string) error {
	if s != "text" && s != "json" {
		return errors.New("want text or json")
	}
	*f = formatFlag(s)
	return nil
}
