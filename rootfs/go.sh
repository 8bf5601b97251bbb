# Go toolchain installed by berth in /usr/local/go. Go's checksum database stays on (GOSUMDB unset).
export GOROOT=/usr/local/go
export GOPATH="${HOME:-/root}/go"
export GOBIN="$GOPATH/bin"
case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) PATH="/usr/local/go/bin:$GOBIN:$PATH" ;; esac
export PATH
