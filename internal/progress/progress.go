// Package progress reports the steps of a long job: on a terminal one live line per step that shows the
// step's latest output, elsewhere (journald, CI, a pipe) one plain log line when a step starts and ends.
package progress

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Job is a sequence of numbered steps.
type Job struct {
	name  string
	total int
	n     int
	w     io.Writer // the terminal, nil when not on one
}

// New starts a job of total steps; live output goes to stderr only if stderr is a terminal.
func New(name string, total int) *Job {
	j := &Job{name: name, total: total}
	if IsTerminal(os.Stderr) {
		j.w = os.Stderr
	}
	return j
}

// NewPlain starts a job that reports with plain log lines even on a terminal, for jobs running side by side
// (a live line each would overwrite the others').
func NewPlain(name string, total int) *Job { return &Job{name: name, total: total} }

// IsTerminal tells whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Step is one running step; its Writer takes the step's command output.
type Step struct {
	job   *Job
	title string
	start time.Time
	mu    sync.Mutex
	line  []byte
}

// Step begins the next step.
func (j *Job) Step(title string) *Step {
	j.n++
	s := &Step{job: j, title: fmt.Sprintf("[%d/%d] %s", j.n, j.total, title), start: time.Now()}
	if j.w == nil {
		logger().Info("step", "job", j.name, "step", s.title)
	} else {
		s.draw("")
	}
	return s
}

func (s *Step) draw(last string) {
	text := fmt.Sprintf("%s (%ds) %s", s.title, int(time.Since(s.start).Seconds()), last)
	if len(text) > 110 {
		text = text[:110]
	}
	fmt.Fprintf(s.job.w, "\r\033[K%s", text)
}

// Write takes command output: on a terminal its last line is shown after the step's title; otherwise it is
// dropped (the command's error, if any, carries its tail).
func (s *Step) Write(p []byte) (int, error) {
	if s == nil || s.job.w == nil {
		return len(p), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.line = append(s.line, p...)
	if i := bytes.LastIndexByte(s.line, '\n'); i >= 0 {
		complete := strings.TrimSpace(string(s.line[:i]))
		s.line = s.line[i+1:]
		if j := strings.LastIndexByte(complete, '\n'); j >= 0 {
			complete = complete[j+1:]
		}
		s.draw(complete)
	}
	return len(p), nil
}

// Done ends the step, reporting its duration, or its failure.
func (s *Step) Done(err error) error {
	d := time.Since(s.start).Round(100 * time.Millisecond)
	if s.job.w != nil {
		status := "done"
		if err != nil {
			status = "FAILED"
		}
		fmt.Fprintf(s.job.w, "\r\033[K%s %s in %s\n", s.title, status, d)
	} else if err == nil {
		logger().Info("step done", "job", s.job.name, "step", s.title, "took", d)
	}
	return err
}
