package acme

import (
	"strings"
	"testing"
)

// TestValidToken: only RFC 8555's base64url tokens reach HAProxy's configuration.
func TestValidToken(t *testing.T) {
	if err := validToken("relay", "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "short", "tok }\n\thttp-request return status 200 string x if TRUE #aaaaaaaaaa", "tok en/../aaaaaaaaaaaaaa", strings.Repeat("a", 300)} {
		err := validToken("relay", bad)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("token %q: %v", bad, err)
		}
	}
}
