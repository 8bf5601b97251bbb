export GOFLAGS=-mod=mod
cd /usr/local/src/cookiecutter && go build -trimpath -o /usr/local/bin/cookiecutter .
cd /usr/local/src/npub2hex && go build -trimpath -o /usr/local/bin/npub2hex .
