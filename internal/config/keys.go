package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	pkgRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	suiteRE   = regexp.MustCompile(`^[a-z]+$`)
	labelRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ifnameRE  = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
	hexRE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	goVerRE   = regexp.MustCompile(`^1\.\d+(\.\d+)?$`)
	branchRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$`)
	clockRE   = regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d$`)
	movingSet = map[string]bool{"stable": true, "testing": true, "oldstable": true, "oldoldstable": true, "unstable": true}
)

// ValidName checks a name used in paths, units and machine names.
func ValidName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("expected a name of 1-31 lower-case letters, digits and dashes starting with a letter")
	}
	return nil
}

// ValidDomain checks an RFC 1123 host name.
func ValidDomain(s string) error {
	if len(s) > 253 || s == "" {
		return errors.New("expected a DNS name such as relay.example.com")
	}
	for _, l := range strings.Split(s, ".") {
		if !labelRE.MatchString(l) {
			return errors.New("expected a DNS name such as relay.example.com")
		}
	}
	return nil
}

// letsEncrypt is Let's Encrypt's production directory, the default ACME directory.
const letsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// urlValue sets dst to an http(s):// URL.
func urlValue(dst *string) func(*Config, string) error {
	return func(_ *Config, v string) error {
		if err := httpURL(v); err != nil {
			return err
		}
		*dst = v
		return nil
	}
}

func emailAddr(v string) error {
	local, domain, ok := strings.Cut(v, "@")
	if !ok || local == "" || strings.ContainsAny(local, " <>") || ValidDomain(domain) != nil {
		return errors.New("expected an e-mail address such as admin@example.com")
	}
	return nil
}

// privateTLDs are the last labels of names no public ACME server certifies: RFC 6761's special-use names
// (test, localhost, invalid, example), RFC 6762's local, ICANN's internal, RFC 8375's home.arpa (as arpa),
// and the usual private suffixes of home and company networks.
var privateTLDs = []string{"test", "localhost", "invalid", "example", "local", "internal", "arpa", "lan", "home", "corp", "localdomain", "intranet", "private"}

// PublicName says whether name can be certified by a public ACME server such as Let's Encrypt, and if not
// why: an IP address, a single label (no dot), or a name under a special-use or private top-level domain
// (privateTLDs). [Demo] SelfSigned = auto gets a certificate from ACME only for a public name.
func PublicName(name string) (bool, string) {
	last := name[strings.LastIndexByte(name, '.')+1:]
	switch {
	case name == "":
		return false, "no name"
	case net.ParseIP(name) != nil || strings.Trim(last, "0123456789") == "":
		return false, "an IP address"
	case !strings.Contains(name, "."):
		return false, "a single label, without a dot"
	case slices.Contains(privateTLDs, strings.ToLower(last)):
		return false, "under ." + strings.ToLower(last) + ", which no public CA certifies"
	}
	return true, ""
}

func words(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

func absPath(dst *string) func(*Config, string) error {
	return func(_ *Config, v string) error {
		if !filepath.IsAbs(v) || filepath.Clean(v) != v || v == "/" {
			return errors.New("expected a clean absolute path other than /")
		}
		*dst = v
		return nil
	}
}

func optional(check func(string) error, dst *string) func(*Config, string) error {
	return func(_ *Config, v string) error {
		if v != "" {
			if err := check(v); err != nil {
				return err
			}
		}
		*dst = v
		return nil
	}
}

func httpURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("expected an http:// or https:// URL")
	}
	return nil
}

// ports parses TCP port numbers separated by spaces (empty: none).
func ports(dst *[]int) func(*Config, string) error {
	return func(_ *Config, v string) error {
		*dst = nil
		for _, w := range words(v) {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("%q: expected TCP port numbers separated by spaces, such as 80 443", w)
			}
			*dst = append(*dst, n)
		}
		return nil
	}
}

// archive checks the URL of an apt archive (what: whose archive, for the error).
func archive(dst *string, what string) func(*Config, string) error {
	return func(_ *Config, v string) error {
		if !strings.HasPrefix(v, "file:///") && httpURL(v) != nil {
			return errors.New("expected an http(s):// URL or a file:/// path of " + what)
		}
		*dst = v
		return nil
	}
}

func listenAddr(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("expected a listen address such as :80 or 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("expected a port between 1 and 65535")
	}
	if host != "" && net.ParseIP(host) == nil && ValidDomain(host) != nil {
		return errors.New("expected a listen address such as :80 or 127.0.0.1:8080")
	}
	return nil
}

func names(dst *[]string, exactly int) func(*Config, string) error {
	return func(_ *Config, v string) error {
		ws := words(v)
		seen := map[string]bool{}
		for _, w := range ws {
			if err := ValidName(w); err != nil {
				return fmt.Errorf("%q: %w", w, err)
			}
			if seen[w] {
				return fmt.Errorf("%q is listed twice", w)
			}
			seen[w] = true
		}
		if exactly > 0 && len(ws) != exactly {
			return fmt.Errorf("expected exactly %d names", exactly)
		}
		if len(ws) == 0 {
			return errors.New("expected at least one name")
		}
		*dst = ws
		return nil
	}
}

func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "1", "yes", "true", "on":
		return true, true
	case "", "0", "no", "false", "off":
		return false, true
	}
	return false, false
}

// keys lists every configuration key in the order Summary prints them and values are checked.
var keys = []key{
	{"Paths", "Machines", "/var/lib/machines", func(c *Config, v string) error { return absPath(&c.Paths.Machines)(c, v) }},
	{"Paths", "NSpawn", "/etc/systemd/nspawn", func(c *Config, v string) error { return absPath(&c.Paths.NSpawn)(c, v) }},
	{"Paths", "Units", "/etc/systemd/system", func(c *Config, v string) error { return absPath(&c.Paths.Units)(c, v) }},
	{"Paths", "Srv", "/srv", func(c *Config, v string) error { return absPath(&c.Paths.Srv)(c, v) }},
	{"Paths", "State", "/var/lib/berth", func(c *Config, v string) error { return absPath(&c.Paths.State)(c, v) }},
	{"Paths", "Cache", "/var/cache/berth", func(c *Config, v string) error { return absPath(&c.Paths.Cache)(c, v) }},
	{"Paths", "LXC", "/var/lib/lxc", func(c *Config, v string) error { return absPath(&c.Paths.LXC)(c, v) }},
	{"Paths", "Binary", "/usr/local/sbin/berth", func(c *Config, v string) error { return absPath(&c.Paths.Binary)(c, v) }},

	{"Base", "Suite", "bookworm", func(c *Config, v string) error {
		if movingSet[v] || !suiteRE.MatchString(v) {
			return errors.New("expected a pinned Debian codename such as bookworm (not a moving alias like stable)")
		}
		c.Base.Suite = v
		return nil
	}},
	{"Base", "Mirror", "http://deb.debian.org/debian", func(c *Config, v string) error { return archive(&c.Base.Mirror, "a Debian archive")(c, v) }},
	{"Base", "ExtraSuites", "updates security", func(c *Config, v string) error {
		c.Base.ExtraSuites = nil
		for _, w := range words(v) {
			if w != "updates" && w != "security" && w != "backports" {
				return fmt.Errorf("%q: expected any of updates, security, backports (empty: only [Base] Suite)", w)
			}
			c.Base.ExtraSuites = append(c.Base.ExtraSuites, w)
		}
		return nil
	}},
	{"Base", "SecurityMirror", "http://deb.debian.org/debian-security", func(c *Config, v string) error {
		return archive(&c.Base.SecurityMirror, "Debian's security archive")(c, v)
	}},
	{"Base", "Packages", "systemd dbus ca-certificates less", func(c *Config, v string) error {
		for _, p := range words(v) {
			if !pkgRE.MatchString(p) {
				return fmt.Errorf("%q: expected Debian package names separated by spaces", p)
			}
		}
		c.Base.Packages = words(v)
		return nil
	}},
	{"Base", "Bootstrapper", "auto", func(c *Config, v string) error {
		if v != "auto" && v != "mmdebstrap" && v != "debootstrap" {
			return errors.New("expected auto (mmdebstrap when installed, else debootstrap), mmdebstrap or debootstrap")
		}
		c.Base.Bootstrapper = v
		return nil
	}},
	{"Base", "GoVersion", DefaultGoVersion, func(c *Config, v string) error {
		v = strings.TrimPrefix(v, "go")
		if !goVerRE.MatchString(v) {
			return errors.New("expected a Go version such as " + DefaultGoVersion)
		}
		c.Base.GoVersion = v
		return nil
	}},
	{"Base", "GoTarball", "", func(c *Config, v string) error {
		if v != "" && !filepath.IsAbs(v) && httpURL(v) != nil {
			return errors.New("expected an http(s):// URL or an absolute path (empty: the Go module proxy)")
		}
		c.Base.GoTarball = v
		return nil
	}},
	{"Base", "GoSHA256", "", func(c *Config, v string) error {
		v = strings.ToLower(v)
		if v != "" && !hexRE.MatchString(v) {
			return errors.New("expected 64 hexadecimal digits")
		}
		if v == "" && c.Base.GoVersion != DefaultGoVersion {
			return fmt.Errorf("expected the sha256 of the Go %s archive: berth pins only %s", c.Base.GoVersion, DefaultGoVersion)
		}
		c.Base.GoSHA256 = v
		return nil
	}},

	{"Relay", "EnvFile", ".env", func(c *Config, v string) error {
		if strings.ContainsRune(v, 0) {
			return errors.New("expected a file path, or nothing")
		}
		c.Relay.EnvFile = ""
		if v != "" {
			c.Relay.EnvFile, _ = filepath.Abs(v)
		}
		return nil
	}},
	{"Relay", "Domain", "", func(c *Config, v string) error { return optional(ValidDomain, &c.Relay.Domain)(c, v) }},
	{"Relay", "Email", "", func(c *Config, v string) error { return optional(emailAddr, &c.Relay.Email)(c, v) }},
	{"Relay", "SelfSigned", "no", func(c *Config, v string) error {
		if b, ok := parseBool(v); ok {
			c.Relay.SelfSigned = b
			return nil
		}
		if ValidDomain(v) != nil {
			return errors.New("expected yes/no, or the domain name to certify (as SELF_SIGNED=<domain>)")
		}
		c.Relay.SelfSigned = true
		if o := c.origins["Relay.Domain"]; o == "default" || fromLegacyDomain(o) {
			c.Relay.Domain = v
			c.setDerived("Relay.Domain", v, "from [Relay] SelfSigned")
		}
		return nil
	}},
	{"Relay", "ACMEDirectory", letsEncrypt, func(c *Config, v string) error { return urlValue(&c.Relay.ACMEDirectory)(c, v) }},
	{"Relay", "Machines", "mysql relaycreator haproxy strfry", func(c *Config, v string) error { return names(&c.Relay.Machines, 0)(c, v) }},
	{"Relay", "HealthTimeout", "3min", func(c *Config, v string) error {
		d, err := ParseTimeSpan(v)
		if err != nil {
			return err
		}
		if d < time.Second || d > time.Hour {
			return errors.New("expected a time span between 1s and 1h, such as 90s or 3min")
		}
		c.Relay.HealthTimeout = d
		return nil
	}},

	{"Relay", "DeployBranch", "", func(c *Config, v string) error {
		return optional(func(v string) error {
			if !branchRE.MatchString(v) || strings.Contains(v, "..") || strings.HasSuffix(v, ".lock") {
				return errors.New("expected a git branch name such as main (empty: no automatic deploys)")
			}
			return nil
		}, &c.Relay.DeployBranch)(c, v)
	}},
	{"Relay", "DeployRepo", "", func(c *Config, v string) error {
		return optional(func(v string) error {
			if u, err := url.Parse(v); !strings.HasPrefix(v, "/") && (err != nil || (u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "ssh") || u.Host == "") {
				return errors.New("expected an https://, ssh:// or http:// git URL, or a path inside the relaycreator machine (empty: the image's source)")
			}
			if strings.ContainsAny(v, " \t\n\"'$`\\") {
				return errors.New("expected a git URL without spaces, quotes or shell characters")
			}
			return nil
		}, &c.Relay.DeployRepo)(c, v)
	}},

	{"Demo", "Domain", "", func(c *Config, v string) error { return optional(ValidDomain, &c.Demo.Domain)(c, v) }},
	{"Demo", "Image", "yunohost", func(c *Config, v string) error {
		if err := ValidName(v); err != nil {
			return err
		}
		c.Demo.Image = v
		return nil
	}},
	{"Demo", "User", "demo", func(c *Config, v string) error {
		if err := ValidName(v); err != nil {
			return err
		}
		c.Demo.User = v
		return nil
	}},
	{"Demo", "Containers", "demo1 demo2", func(c *Config, v string) error { return names(&c.Demo.Containers, 2)(c, v) }},
	{"Demo", "Bridge", "berthdemo0", func(c *Config, v string) error {
		if !ifnameRE.MatchString(v) || v == "." || v == ".." {
			return errors.New("expected a network interface name of 1-15 letters, digits, '_', '.' or '-'")
		}
		c.Demo.Bridge = v
		return nil
	}},
	{"Demo", "Subnet", "10.1.5.0/24", func(c *Config, v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() || p.Masked() != p || p.Bits() < 16 || p.Bits() > 29 {
			return errors.New("expected an IPv4 network between /16 and /29 with its host bits zero, such as 10.1.5.0/24")
		}
		c.Demo.Subnet = p
		return nil
	}},
	{"Demo", "Backend", "auto", func(c *Config, v string) error {
		switch v {
		case "auto", "btrfs", "overlayfs", "dir":
			c.Demo.Backend = v
			return nil
		}
		return errors.New("expected auto, btrfs, overlayfs or dir")
	}},
	{"Demo", "HTTP", ":80", func(c *Config, v string) error { return optional(listenAddr, &c.Demo.HTTP)(c, v) }},
	{"Demo", "HTTPS", ":443", func(c *Config, v string) error {
		if v == c.Demo.HTTP {
			return errors.New("expected a listen address different from [Demo] HTTP")
		}
		return optional(listenAddr, &c.Demo.HTTPS)(c, v)
	}},
	{"Demo", "SelfSigned", "auto", func(c *Config, v string) error {
		if b, ok := parseBool(v); ok && v != "" {
			c.Demo.SelfSigned = map[bool]string{true: "yes", false: "no"}[b]
		} else if v == "auto" {
			c.Demo.SelfSigned = v
		} else {
			return errors.New("expected auto (ACME when [Demo] Domain is a public name, self-signed otherwise), yes (self-signed) or no (ACME for any [Demo] Domain)")
		}
		if c.Demo.SelfSigned == "no" && (c.Demo.Domain == "" || c.Demo.HTTP == "" || c.Demo.HTTPS == "") {
			return errors.New("expected yes or auto while [Demo] Domain, HTTP or HTTPS is empty: ACME certifies [Demo] Domain through the proxy's HTTP port")
		}
		return nil
	}},
	{"Demo", "ACMEDirectory", letsEncrypt, func(c *Config, v string) error { return urlValue(&c.Demo.ACMEDirectory)(c, v) }},
	{"Demo", "Email", "", func(c *Config, v string) error { return optional(emailAddr, &c.Demo.Email)(c, v) }},
	{"Demo", "HealthPath", "", func(c *Config, v string) error {
		if v != "" && (!strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n")) {
			return errors.New("expected a URL path starting with / and without spaces (empty: the image's [Serve] HealthPath)")
		}
		c.Demo.HealthPath = v
		return nil
	}},
	{"Demo", "SwitchEvery", "30min", func(c *Config, v string) error {
		d, err := ParseTimeSpan(v)
		if err != nil {
			return err
		}
		if d < time.Minute || d > 24*time.Hour || (24*time.Hour)%d != 0 || d%time.Minute != 0 {
			return errors.New("expected whole minutes between 1min and 24h that divide a day evenly (such as 2min, 30min, 1h), so that switches fall on the same times every day")
		}
		c.Demo.SwitchEvery = d
		return nil
	}},
	{"Demo", "UpgradeAt", "03:02", func(c *Config, v string) error {
		if !clockRE.MatchString(v) {
			return errors.New("expected a time of day HH:MM such as 03:02")
		}
		c.Demo.UpgradeAt = v
		return nil
	}},
	{"Demo", "Hooks", "", func(c *Config, v string) error {
		if v != "" && (!filepath.IsAbs(v) || filepath.Clean(v) != v) {
			return errors.New("expected a clean absolute path (empty: [Paths] State/upgrade.d)")
		}
		c.Demo.Hooks = v
		return nil
	}},
	{"Demo", "KeepSnapshots", "3", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 50 {
			return errors.New("expected a whole number from 1 to 50")
		}
		c.Demo.KeepSnapshots = n
		return nil
	}},
	{"Demo", "Memory", "2G", func(c *Config, v string) error {
		n, err := strconv.ParseInt(strings.TrimRight(v, "KMGkmg"), 10, 64)
		shift := map[string]int{"": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(strings.TrimLeft(v, "0123456789"))]
		if err != nil || len(strings.TrimLeft(v, "0123456789")) > 1 || n<<shift < 64<<20 {
			return errors.New("expected a size of at least 64M such as 512M or 2G")
		}
		c.Demo.Memory = n << shift
		return nil
	}},
	{"Demo", "CPUs", "1", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if v != "" && (err != nil || f < 0.1 || f > 1024) {
			return errors.New("expected a number of CPUs such as 1 or 0.5 (empty: no limit)")
		}
		c.Demo.CPUs = f
		return nil
	}},
	{"Demo", "Tasks", "1024", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 64 || n > 1<<22 {
			return errors.New("expected a number of processes from 64 up")
		}
		c.Demo.Tasks = n
		return nil
	}},
	{"Demo", "EgressPorts", "80 443", func(c *Config, v string) error { return ports(&c.Demo.EgressPorts)(c, v) }},
	{"Demo", "HostPorts", "", func(c *Config, v string) error { return ports(&c.Demo.HostPorts)(c, v) }},
	{"Demo", "AlertCommand", "", func(c *Config, v string) error {
		argv := strings.Fields(v)
		if len(argv) > 0 && !filepath.IsAbs(argv[0]) {
			return errors.New("expected a command starting with an absolute path, such as /usr/local/bin/alert-mail")
		}
		c.Demo.AlertCommand = argv
		return nil
	}},

	{"Publish", "Endpoint", "", func(c *Config, v string) error {
		return optional(func(v string) error {
			if u, err := url.Parse(v); httpURL(v) != nil || err != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
				return errors.New("expected the S3 endpoint as an http:// or https:// URL of a host and port only, such as https://s3.example.com")
			}
			return nil
		}, &c.Publish.Endpoint)(c, v)
	}},
	{"Publish", "Bucket", "", func(c *Config, v string) error {
		return optional(func(v string) error {
			if !bucketRE.MatchString(v) || strings.Contains(v, "..") {
				return errors.New("expected an S3 bucket name: 3-63 lower-case letters, digits, dots and dashes")
			}
			return nil
		}, &c.Publish.Bucket)(c, v)
	}},
	{"Publish", "Prefix", "berth", func(c *Config, v string) error {
		return optional(func(v string) error {
			if !prefixRE.MatchString(v) || strings.Contains(v, "//") || strings.Contains(v, "..") {
				return errors.New("expected an object name prefix of letters, digits, '.', '_', '-' and inner '/' (no leading or trailing '/')")
			}
			return nil
		}, &c.Publish.Prefix)(c, v)
	}},
	{"Publish", "Region", "us-east-1", func(c *Config, v string) error {
		if !regionRE.MatchString(v) {
			return errors.New("expected an S3 region name such as us-east-1")
		}
		c.Publish.Region = v
		return nil
	}},
	{"Publish", "Credentials", "", func(c *Config, v string) error {
		if v == "" {
			return nil // derived: [Paths] State/publish/credentials
		}
		return absPath(&c.Publish.Credentials)(c, v)
	}},
	{"Publish", "Key", "", func(c *Config, v string) error {
		if v == "" {
			return nil // derived: [Paths] State/publish/signing.key
		}
		return absPath(&c.Publish.Key)(c, v)
	}},
	{"Publish", "PublicKey", "", func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		return absPath(&c.Publish.PublicKey)(c, v)
	}},
	{"Publish", "Verify", "signature", func(c *Config, v string) error {
		if v != "signature" && v != "checksum" {
			return errors.New("expected signature (SHA256SUMS signed by the publisher's key) or checksum (SHA256SUMS only)")
		}
		c.Publish.Verify = v
		return nil
	}},
	{"Publish", "Pull", "", func(c *Config, v string) error { return optional(httpURL, &c.Publish.Pull)(c, v) }},
	{"Publish", "PullEvery", "", func(c *Config, v string) error {
		c.Publish.PullEvery = 0
		if v == "" {
			return nil
		}
		d, err := ParseTimeSpan(v)
		if err != nil || d < 5*time.Minute || d%time.Second != 0 {
			return errors.New("expected a period of whole seconds, at least 5min, such as 1h (empty: no berth-machines-pull.timer)")
		}
		c.Publish.PullEvery = d
		return nil
	}},
}

var (
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)
	regionRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
)

var spanUnits = map[string]time.Duration{
	"us": time.Microsecond, "usec": time.Microsecond, "ms": time.Millisecond, "msec": time.Millisecond,
	"s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

var spanRE = regexp.MustCompile(`^\s*(\d+)\s*([a-z]*)`)

// ParseTimeSpan parses systemd's time-span syntax ("30min", "1h 30min", "90s"; a bare number is seconds).
func ParseTimeSpan(s string) (time.Duration, error) {
	bad := fmt.Errorf("expected a time span such as 30min, 2min or 1h")
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, bad
	}
	var total time.Duration
	for rest != "" {
		m := spanRE.FindStringSubmatch(rest)
		if m == nil {
			return 0, bad
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		unit := spanUnits[m[2]]
		if m[2] == "" {
			unit = time.Second
		}
		if err != nil || unit == 0 || n > int64(1<<62)/int64(unit) {
			return 0, bad
		}
		total += time.Duration(n) * unit
		rest = strings.TrimSpace(rest[len(m[0]):])
	}
	return total, nil
}
