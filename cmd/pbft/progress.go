package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progressLine is a live status line: on a terminal it is rewritten in place; anywhere
// else (a pipe, a log file, CI) it is a plain line, at most one every plainEvery, so
// that logs stay readable.
type progressLine struct {
	w    io.Writer
	tty  bool
	last time.Time
	open bool // a line is on the terminal without its newline
}

const plainEvery = 5 * time.Second

func newProgressLine(w io.Writer) *progressLine {
	f, ok := w.(*os.File)
	return &progressLine{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// update shows the status; final forces it out (the last one of a run).
func (p *progressLine) update(final bool, format string, args ...any) {
	if p.tty {
		fmt.Fprintf(p.w, "\r"+format+" ", args...)
		p.open = true
		return
	}
	if !final && !p.last.IsZero() && time.Since(p.last) < plainEvery {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// end closes the line on a terminal.
func (p *progressLine) end() {
	if p.tty && p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}
