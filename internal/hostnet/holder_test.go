package hostnet

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

func TestHolder(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	want := fmt.Sprintf("pid %d (", os.Getpid())
	for _, addr := range []string{l.Addr().String(), fmt.Sprintf(":%d", port), fmt.Sprintf("0.0.0.0:%d", port)} {
		if h, err := Holder(addr); err != nil || !strings.HasPrefix(h, want) {
			t.Errorf("Holder(%s) = %q, %v; want %s…", addr, h, err, want)
		}
	}
	if h, err := Holder(fmt.Sprintf("127.0.0.2:%d", port)); err != nil || h != "" {
		t.Errorf("another address of the port: %q %v", h, err)
	}
	l.Close()
	if h, err := Holder(fmt.Sprintf(":%d", port)); err != nil || h != "" {
		t.Errorf("after close: %q %v", h, err)
	}
	if got := procAddr("0100007F"); got.String() != "127.0.0.1" {
		t.Errorf("procAddr: %s", got)
	}
}
