// Progress of long work, shown the same way by every command (and the
// demo): a bar redrawn in place on a terminal (schollz/progressbar), and
// elsewhere (CI logs, pipes, files) a line every few seconds and one at
// the end.

package cli

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// ProgressLineEvery is how often a Bar that is not on a terminal writes its line.
const ProgressLineEvery = 2 * time.Second

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Bar reports the progress of one piece of work towards a total. Not safe
// for concurrent use.
type Bar struct {
	bar  *progressbar.ProgressBar // on a terminal
	line func(done, total int64)  // elsewhere
	last time.Time
	done int64
	tot  int64
}

// NewBar returns a Bar for work of total units (events, messages) written to
// out. On a terminal it draws a bar described by what; elsewhere it calls
// line at most every ProgressLineEvery, and once more at Finish.
func NewBar(out io.Writer, what, unit string, total int64, line func(done, total int64)) *Bar {
	b := &Bar{line: line, tot: total}
	if IsTerminal(out) {
		b.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(what), progressbar.OptionSetItsString(unit),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionOnCompletion(func() { _, _ = io.WriteString(out, "\n") }))
	}
	return b
}

// Set says that done units of the total are done; total may change (work
// whose size is learned on the way).
func (b *Bar) Set(done, total int64) {
	b.done = done
	if b.bar != nil {
		if total != b.tot {
			b.bar.ChangeMax64(total)
		}
		b.tot = total
		_ = b.bar.Set64(done)
		return
	}
	b.tot = total
	if time.Since(b.last) >= ProgressLineEvery {
		b.last = time.Now()
		b.line(done, total)
	}
}

// Describe changes the text beside the bar (a terminal only: elsewhere
// the line function says what it wants each time).
func (b *Bar) Describe(what string) {
	if b.bar != nil {
		b.bar.Describe(what)
	}
}

// Finish ends the bar, or writes the last line.
func (b *Bar) Finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
		return
	}
	b.line(b.done, b.tot)
}
