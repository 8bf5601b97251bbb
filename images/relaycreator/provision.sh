# Node.js is Debian's (pinned by the suite); pnpm is pinned here.
npm install --global --no-fund --no-audit pnpm@9.15.9
ln -sfn /srv/relaycreator/.env /opt/relaycreator/.env
relaycreator-build /opt/relaycreator
