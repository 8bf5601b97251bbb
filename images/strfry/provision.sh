cd /app || exit
make setup-golpe
make -j"$(nproc)"
test -x /app/strfry
export GOFLAGS=-mod=mod
for tool in cookiecutter spamblaster interceptor; do
	(cd /usr/local/src/$tool && go build -trimpath -o /usr/local/bin/$tool .)
done
