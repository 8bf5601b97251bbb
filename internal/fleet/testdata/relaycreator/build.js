// Stands in for `next build`: writes the build the stub serves, and fails when BROKEN exists.
const fs = require("fs");
if (fs.existsSync("BROKEN")) { console.error("build failed on purpose"); process.exit(1); }
fs.mkdirSync(".next", { recursive: true });
fs.writeFileSync(".next/BUILD_ID", fs.existsSync("VERSION") ? fs.readFileSync("VERSION", "utf8").trim() : "v1");
