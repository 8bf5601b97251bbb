package relay

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"berth/internal/acme"
	"berth/internal/config"
	"berth/internal/fsx"
	"berth/internal/machine"
	"berth/internal/run"
)

// The ACME client (internal/acme) answers HTTP-01 challenges through the running edge: for the few seconds
// of a validation, HAProxy's configuration gets one `http-request return` rule per challenge on its port-80
// frontend (a frontend of its own when the configuration has none), applied with a graceful reload, and the
// configuration is put back afterwards. HAProxy keeps its ports and its connections throughout;
// cookiecutter's refresh timer is held meanwhile so that it does not rewrite the file under us.

func accountKeyFile(c *config.Config) string {
	return filepath.Join(c.Paths.State, "relay", "acme-account.key")
}

const haproxyCfgRel = "haproxy.cfg"

// acmeClient loads (or creates, 0600) the account key and checks that the directory answers; it changes
// nothing else, so configure can call it before writing any file.
func acmeClient(ctx context.Context, c *config.Config) (*acme.Client, error) {
	return acme.New(ctx, "relay", c.Relay.ACMEDirectory, accountKeyFile(c), c.Relay.Email)
}

// obtainACME gets a certificate for [Relay] Domain from [Relay] ACMEDirectory and returns HAProxy's bundle
// (chain, then key).
func obtainACME(ctx context.Context, c *config.Config, cl *acme.Client) ([]byte, error) {
	return cl.Obtain(ctx, c.Relay.Domain, func(ctx context.Context, answers map[string]string) (func() error, error) {
		return answerThroughEdge(ctx, c, answers)
	})
}

var port80 = regexp.MustCompile(`^\s*bind\s+\S*:80(\s|$)`)

// withChallenges returns cfg with a rule answering each challenge path on the frontend that binds port 80,
// ahead of its redirects; without such a frontend, one is added.
func withChallenges(cfg []byte, answers map[string]string) []byte {
	var rules strings.Builder
	rules.WriteString("\t# berth: ACME http-01 answers (removed after validation)\n")
	for path, resp := range answers {
		rules.WriteString("\t" + acme.Rule(path, resp) + "\n")
	}
	lines := strings.SplitAfter(string(cfg), "\n")
	for i, l := range lines {
		if port80.MatchString(l) {
			return []byte(strings.Join(lines[:i+1], "") + rules.String() + strings.Join(lines[i+1:], ""))
		}
	}
	return []byte(strings.TrimRight(string(cfg), "\n") + "\n\nfrontend berth_acme\n\tbind 0.0.0.0:80\n\tmode http\n" + rules.String())
}

// answerThroughEdge puts the challenge answers into the running HAProxy and checks they are served on port
// 80; restore puts the configuration back.
func answerThroughEdge(ctx context.Context, c *config.Config, answers map[string]string) (restore func() error, err error) {
	if !machine.Running(ctx, "haproxy") {
		return nil, errors.New("relay: the haproxy machine is not running: it answers the ACME challenge")
	}
	orig, err := fsx.ReadIn(edgeDir(c), haproxyCfgRel)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	systemctl := func(args ...string) error {
		_, err := run.Command(ctx, append([]string{"systemctl", "-M", "haproxy"}, args...)...)
		return err
	}
	restore = func() error {
		err := fsx.WriteIn(edgeDir(c), haproxyCfgRel, orig, 0o644, 0o755)
		if err == nil {
			err = systemctl("reload", "haproxy.service")
		}
		return errors.Join(err, systemctl("start", "haproxycheck.timer"))
	}
	if err := systemctl("stop", "haproxycheck.timer"); err != nil {
		return nil, err
	}
	if err := fsx.WriteIn(edgeDir(c), haproxyCfgRel, withChallenges(orig, answers), 0o644, 0o755); err != nil {
		return nil, errors.Join(err, restore())
	}
	if err := systemctl("reload", "haproxy.service"); err != nil {
		return nil, errors.Join(err, restore())
	}
	for path, want := range answers {
		if err := acme.WaitServed(ctx, "relay: the edge", "http://127.0.0.1:80"+path, "", want); err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	logger().Info("ACME challenges answered by the edge", "count", len(answers))
	return restore, nil
}
