# The page names the container it is served from (its host name, set by LXC), so a visitor and a test see
# which one answers; /visits is where a visitor's writes land (and are gone after the next reset).
cat > /etc/nginx/sites-available/default <<'CONF'
server {
	listen 80 default_server;
	root /var/www/html;
	location = / { default_type text/plain; return 200 "berth demo $hostname\n"; }
	location /health { default_type text/plain; return 200 "ok\n"; }
	# A file, not "return": nginx runs return before auth_basic, which would then never be asked.
	location = /login {
		auth_basic "berth demo";
		auth_basic_user_file /etc/nginx/demo.htpasswd;
		default_type text/plain;
		alias /var/www/berth-login.txt;
	}
}
CONF
echo "logged in" >/var/www/berth-login.txt
# The demo login: the demo user with the demo password (public on a demo's login page anyway).
printf '%s:{PLAIN}%s\n' "${BERTH_DEMO_USER:?}" "$(cat "${BERTH_DEMO_PASSWORD_FILE:?}")" >/etc/nginx/demo.htpasswd
chown root:www-data /etc/nginx/demo.htpasswd
chmod 0640 /etc/nginx/demo.htpasswd
rm -f /var/www/html/index.nginx-debian.html
# The host name is the container's own (LXC's lxc.uts.name): both containers share one pristine tree.
rm -f /etc/hostname
