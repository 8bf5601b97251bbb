package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Offered lists the settings berth can give a provision script ([Settings] Receive), each an environment
// variable of the script; the caller of a build fills them (the demo from its configuration).
var Offered = map[string]string{
	"BERTH_DOMAIN":             "the domain the payload answers for ([Demo] Domain)",
	"BERTH_DEMO_USER":          "the demo user's name ([Demo] User)",
	"BERTH_DEMO_PASSWORD_FILE": "path of a read-only copy of the host's demo password file, inside the build",
	"BERTH_PUBLIC_SCHEME":      "https when the front serves HTTPS to visitors, else http",
}

// Setting is one value a build offers to the provision script.
type Setting struct {
	Name   string // one of Offered
	Value  string // for File, the host file whose content the script may read
	Origin string // where the value came from, for the build log: "[Demo] Domain (file /etc/berth/berth.conf:3)"
	File   bool   // the script gets the path of a read-only copy; the content never reaches the log
}

// buildDir is where a build places the image folder and the setting files inside the tree (not under /run,
// which a booted systemd mounts over); it is removed before the tree is published.
const buildDir = "var/lib/berth-build"

// env is what a provision script receives: the settings the image asks for, resolved.
type env struct {
	vars  map[string]string // name → value inside the tree
	files map[string]string // path inside the tree (relative) → host file to copy there read-only
	log   []string          // one line per setting, for the build log (never a file's content)
	sum   string            // changes whenever a value or a file's content changes (in the image's stamp)
}

// hostEnvName is the host variable that feeds [Settings] Host name n of image: BERTH_<IMAGE>_<NAME>.
func hostEnvName(image, n string) string {
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(image, "-", "_")) + "_" + n
}

// environment resolves what the image receives from offered and from the host's environment.
func (m *Manifest) environment(offered []Setting) (env, error) {
	e := env{vars: map[string]string{}, files: map[string]string{}}
	h := sha256.New()
	for _, name := range m.Receive {
		var s *Setting
		for i := range offered {
			if offered[i].Name == name {
				s = &offered[i]
			}
		}
		if s == nil {
			return e, fmt.Errorf("image %s receives %s ([Settings] Receive), which this build does not provide (only demo builds do)", m.Name, name)
		}
		if !s.File {
			e.vars[name] = s.Value
			e.log = append(e.log, fmt.Sprintf("%s=%s (%s)", name, s.Value, s.Origin))
			fmt.Fprintf(h, "%s=%s\n", name, s.Value)
			continue
		}
		f, err := os.Open(s.Value)
		if err != nil {
			return e, fmt.Errorf("setting %s: %w", name, err)
		}
		fh := sha256.New()
		_, err = io.Copy(fh, f)
		f.Close()
		if err != nil {
			return e, fmt.Errorf("setting %s: %w", name, err)
		}
		rel := path.Join(buildDir, strings.ToLower(name))
		e.vars[name], e.files[rel] = "/"+rel, s.Value
		e.log = append(e.log, fmt.Sprintf("%s=/%s (a read-only copy of %s, %s)", name, rel, s.Value, s.Origin))
		fmt.Fprintf(h, "%s=file %x\n", name, fh.Sum(nil))
	}
	for _, n := range m.HostEnv {
		hn := hostEnvName(m.Name, n)
		v, ok := os.LookupEnv(hn)
		if !ok {
			e.log = append(e.log, fmt.Sprintf("%s unset (host %s)", hn, hn))
			continue
		}
		e.vars[hn] = v
		e.log = append(e.log, fmt.Sprintf("%s=%s (env %s)", hn, v, hn))
		fmt.Fprintf(h, "%s=%s\n", hn, v)
	}
	if len(m.Receive)+len(m.HostEnv) > 0 {
		e.sum = hex.EncodeToString(h.Sum(nil))[:16]
	}
	return e, nil
}
