module berth

go 1.26.0

require golang.org/x/sys v0.49.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.4.1
	github.com/lxc/go-lxc v0.0.0-00010101000000-000000000000
	github.com/magefile/mage v1.17.2
	golang.org/x/crypto v0.58.0
)

require github.com/godbus/dbus/v5 v5.1.0 // indirect

replace github.com/lxc/go-lxc => /usr/share/gocode/src/gopkg.in/lxc/go-lxc.v2
