package run

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestErrorsNameTheCommandAndKeepItsOutput(t *testing.T) {
	_, err := Cmd{Argv: []string{"sh", "-c", "echo one; echo two >&2; echo three >&2; exit 3"}}.Run(context.Background())
	var re *Error
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "sh -c") || !strings.Contains(err.Error(), "two | three") ||
		strings.Contains(err.Error(), "\n") {
		t.Fatalf("error: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	start := time.Now()
	_, err := Cmd{Argv: []string{"sleep", "10"}, Timeout: 100 * time.Millisecond}.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Fatalf("error: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the timeout did not stop the command")
	}
}

func TestOutput(t *testing.T) {
	out, err := Output(context.Background(), "printf", "%s\n", "hello")
	if err != nil || out != "hello" {
		t.Fatalf("%q %v", out, err)
	}
}
