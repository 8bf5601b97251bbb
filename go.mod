module berth

go 1.26.0

require golang.org/x/sys v0.49.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.4.1
	github.com/lxc/go-lxc v0.0.0-00010101000000-000000000000
	github.com/magefile/mage v1.17.2
	github.com/otiai10/copy v1.14.1
	github.com/rhysd/actionlint v1.7.12
	golang.org/x/crypto v0.58.0
)

require (
	github.com/bmatcuk/doublestar/v4 v4.10.0 // indirect
	github.com/clipperhouse/uax29/v2 v2.7.0 // indirect
	github.com/fatih/color v1.19.0 // indirect
	github.com/godbus/dbus/v5 v5.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/mattn/go-runewidth v0.0.21 // indirect
	github.com/mattn/go-shellwords v1.0.12 // indirect
	github.com/otiai10/mint v1.6.3 // indirect
	github.com/robfig/cron/v3 v3.0.1 // indirect
	go.yaml.in/yaml/v4 v4.0.0-rc.3 // indirect
	golang.org/x/sync v0.20.0 // indirect
)

replace github.com/lxc/go-lxc => /usr/share/gocode/src/gopkg.in/lxc/go-lxc.v2
