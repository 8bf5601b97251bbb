# Node.js is Debian's (pinned by the suite); pnpm is pinned here.
npm install --global --no-fund --no-audit pnpm@9.15.9
# The app's own user (app.service's User=); builds, deploys and migrations stay root's.
useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin relaycreator
relaycreator-build /opt/relaycreator
