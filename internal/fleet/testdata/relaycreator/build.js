// Stands in for `next build`: writes the build the stub serves, with the public setting baked in as Next.js
// does with NEXT_PUBLIC_* at build time, and fails when BROKEN exists.
const fs = require("fs");
if (fs.existsSync("BROKEN")) { console.error("build failed on purpose"); process.exit(1); }
fs.mkdirSync(".next", { recursive: true });
fs.writeFileSync(".next/BUILD_ID", fs.existsSync("VERSION") ? fs.readFileSync("VERSION", "utf8").trim() : "v1");
fs.writeFileSync(".next/PUBLIC", process.env.NEXT_PUBLIC_CREATOR_DOMAIN || "unset");
