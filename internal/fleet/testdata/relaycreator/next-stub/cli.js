#!/usr/bin/env node
// Stands in for `next start`: serves the build id and the baked public domain on -p (3000), on the address
// -H names (all interfaces without it, as next does).
const fs = require("fs");
const http = require("http");
const args = process.argv.slice(2);
const opt = (flag, def) => (args.indexOf(flag) >= 0 ? args[args.indexOf(flag) + 1] : def);
const id = fs.readFileSync(".next/BUILD_ID", "utf8");
const pub = fs.existsSync(".next/PUBLIC") ? fs.readFileSync(".next/PUBLIC", "utf8") : "unset";
http.createServer((req, res) => res.end("relaycreator fixture " + id + " for " + pub + "\n")).listen(Number(opt("-p", "3000")), opt("-H", "0.0.0.0"));
