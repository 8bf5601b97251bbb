#!/usr/bin/env node
// Stands in for `next start`: serves the build id on port 3000.
const fs = require("fs");
const http = require("http");
const id = fs.readFileSync(".next/BUILD_ID", "utf8");
http.createServer((req, res) => res.end("relaycreator fixture " + id + "\n")).listen(3000, "127.0.0.1");
